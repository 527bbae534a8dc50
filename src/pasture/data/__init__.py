"""Data: folders -> decoded uint8 tensors -> splits.

layouts   which files are images of which class in which split (train/test or class folders)
decode    one file -> one uint8 tensor, with a content-keyed disk cache
images    ImageSet (one split in memory) and Dataset (train + test), class matching by name
groups    the photo source of each image, from a table or from subfolders
splits    seeded stratified splits, k folds, validation splits carved from a training split
"""

from pasture.core.imagefile import IMAGE_SUFFIXES, BadImage, image_files_in
from pasture.core.paths import display_name, printable_name
from pasture.data.decode import decode_image_and_size
from pasture.data.images import Dataset, ImageSet, class_index_map, subset_images
from pasture.data.layouts import (
    decode_files,
    detect_layout,
    find_class_folders,
    load_dataset,
    load_labelled_folder,
    load_pool,
    load_synthetic,
)
from pasture.data.splits import fold_dataset, stratified_folds, stratified_split, validation_split

__all__ = [
    "BadImage",
    "Dataset",
    "IMAGE_SUFFIXES",
    "ImageSet",
    "class_index_map",
    "decode_files",
    "decode_image_and_size",
    "detect_layout",
    "display_name",
    "find_class_folders",
    "fold_dataset",
    "image_files_in",
    "load_dataset",
    "load_labelled_folder",
    "load_pool",
    "load_synthetic",
    "printable_name",
    "stratified_folds",
    "stratified_split",
    "subset_images",
    "validation_split",
]
