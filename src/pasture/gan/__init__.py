"""GANs that make training images: the report's DCGAN, data-efficient variants and a projected GAN.

presets      GAN presets as data (torch-free: the CLI's flags are built from them)
nets         DCGAN generator and discriminator (optionally class-conditional)
projected    FastGAN-style generator; discriminator on frozen EfficientNet-Lite0 features (Projected GAN)
diffaugment  differentiable augmentation of D's inputs (DiffAugment policies)
summary      a GAN folder's summary.json and its check, the loss plot
trainer      the D/G step, DiffAugment/ADA, generator EMA, resumable training of one or more units
sampling     a trained GAN's generators rebuilt and sampled per class (truncation)
kid          Kernel Inception Distance with its standard error, in EfficientNet-Lite2 features
synth        sample a trained GAN into a class-folder set, filter it, score its usefulness
"""
