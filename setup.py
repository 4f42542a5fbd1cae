"""keras-adapters: bottleneck adapters and AdapterDrop for Keras 3 / TensorFlow."""

import pathlib
import re

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"',
                    (pathlib.Path(__file__).parent / "keras_adapters" / "version.py").read_text())[1]

# What only the training scripts (run_classifier.py, run_squad.py) and the
# GLUE and SQuAD tasks need: official metrics and scoring, data sets, flags.
SCRIPTS = [
    # tf-models-official pins TensorFlow's minor version (2.20, see below).
    "tf-models-official~=2.20.0",
    "tensorflow-datasets>=4.9,<5",
    "importlib_resources",  # TFDS needs it on Python 3.11.
    "absl-py>=1.0",
    "scikit-learn>=1.3",
    "scipy>=1.10",
]

setup(
    name="keras-adapters",
    version=VERSION,
    description=(
        "Parameter-efficient transfer learning with bottleneck adapters "
        "(Houlsby et al., 2019) and AdapterDrop (Rücklé et al., 2021) for "
        "Keras 3 and TensorFlow."
    ),
    license="Apache-2.0",
    packages=find_packages(include=["keras_adapters", "keras_adapters.*"]),
    py_modules=["run_classifier", "run_squad"],
    python_requires=">=3.10",
    install_requires=[
        # TensorFlow and tensorflow-text must share a minor version, and
        # tf-models-official (the scripts' extra) pins it too: 2.20 is the
        # newest all three share.
        "tensorflow~=2.20.0",
        "tensorflow-text~=2.20.0",
        "keras>=3.10,<4",
        "keras-hub>=0.21,<1",
        "safetensors>=0.4",
        "numpy",
    ],
    extras_require={
        "scripts": SCRIPTS,
        # The reference checks compare with Hugging Face transformers and
        # AdapterHub's adapters (and read PyTorch files); install
        # torch==2.13.0 first for its CPU wheel.
        "test": [*SCRIPTS, "pytest>=7", "hypothesis>=6", "ruff>=0.6", "torch>=2.1",
                 "transformers~=4.57.6", "adapters==1.3.0"],
    },
)
