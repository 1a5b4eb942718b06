"""Datasets: generate, read, validate and split images before any training starts.

`load_dataset(source, work_dir=...)` accepts
  * "shapes"            - a synthetic, offline, seeded set of drawn shapes and patterns;
  * "cifar10"/"cifar100" - read through torchvision (downloaded when the network allows);
  * "hf:<name>"         - a Hugging Face dataset (needs the optional `datasets` package);
  * a folder or a .zip  - one sub-folder per class, optionally inside train/ and val/.

Every problem with the user's input is raised as `DataError` with one sentence that says
what is wrong and what to do. Files that are merely unusable (not an image, corrupt,
too large, unsafe zip member) are skipped and listed in the `DataReport` instead.

One module per job:
  * `base`    - the shared types (`LoadedData`, `ImageDataset`, `DataReport`, `DataError`),
                seeded splitting and capping, image decoding, `to_tensors`;
  * `zipsafe` - safe zip extraction (unsafe paths, links, encrypted members, zip bombs);
  * `folders` - folder layouts (class folders, train/val splits, a wrapping top folder),
                file checks and the report for them;
  * `shapes`  - the generated "shapes" dataset;
  * `sources` - CIFAR, Hugging Face and zip sources, and the `load_dataset` dispatch.

The limits are module constants of the module that uses them (e.g. `zipsafe.MAX_MEMBERS`);
the names re-exported here are read-only views of them.
"""

from .base import (
    IGNORED_NAMES,
    IMAGE_EXTENSIONS,
    MIN_PER_CLASS,
    DataError,
    DataReport,
    ImageDataset,
    LoadedData,
    check_dataset_size,
    decode_image,
    decoded_bytes,
    to_tensors,
)
from .folders import MAX_PIXELS, MIN_CLASSES, TEST_DIRS, TRAIN_DIRS, VAL_DIRS
from .shapes import SHAPE_CLASSES, generate_shapes
from .sources import (
    ACCEPTED_SOURCES,
    file_digest,
    load_dataset,
    open_source,
    planned_size,
    prune_unpacked,
    source_identity,
    unpack_bytes,
)
from .zipsafe import MAX_MEMBERS, MAX_RATIO, MAX_TOTAL_BYTES, RATIO_MIN_BYTES

__all__ = [
    "ACCEPTED_SOURCES",
    "IGNORED_NAMES",
    "IMAGE_EXTENSIONS",
    "MAX_MEMBERS",
    "MAX_PIXELS",
    "MAX_RATIO",
    "MAX_TOTAL_BYTES",
    "MIN_CLASSES",
    "MIN_PER_CLASS",
    "RATIO_MIN_BYTES",
    "SHAPE_CLASSES",
    "TEST_DIRS",
    "TRAIN_DIRS",
    "VAL_DIRS",
    "DataError",
    "DataReport",
    "ImageDataset",
    "LoadedData",
    "generate_shapes",
    "load_dataset",
    "open_source",
    "planned_size",
    "unpack_bytes",
    "source_identity",
    "file_digest",
    "prune_unpacked",
    "check_dataset_size",
    "decode_image",
    "decoded_bytes",
    "to_tensors",
]
