"""GANs that make training images: the report's DCGAN and data-efficient variants.

presets      GAN presets as data (torch-free: the CLI's flags are built from them)
nets         DCGAN generator and discriminator (optionally class-conditional)
diffaugment  differentiable augmentation of D's inputs (DiffAugment policies)
trainer      the D/G step, DiffAugment/ADA, generator EMA, resumable training of one or more units
synth        sample a trained GAN into a class-folder set, filter it, score its usefulness
"""
