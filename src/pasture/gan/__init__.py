"""GANs that make training images: the report's DCGAN and data-efficient variants."""
