"""GANs that make training images: the report's DCGAN and data-efficient variants.

nets         DCGAN generator and discriminator (optionally class-conditional)
diffaugment  differentiable augmentation of D's inputs (DiffAugment policies)
trainer      presets as data, the D/G step, resumable training of one or more units
synth        sample a trained GAN into a class-folder set, filter it, score its usefulness
"""
