"""Install s3tok: CosyVoice S3 speech tokenizers in PyTorch."""
import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "s3tok" / "version.py").read_text()).group(1)

setup(
    name="s3tok",
    version=version,
    description="Fast, token-exact PyTorch re-implementation of CosyVoice's S3 speech tokenizers",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["s3tok", "s3tok.*"]),
    python_requires=">=3.9",
    # torch is left unpinned so that a GPU machine keeps (or gets) its CUDA build.
    install_requires=[
        "torch>=2.1",
        "numpy",
        # external-data path traversal was fixed in onnx 1.16 (CVE-2024-27318) and 1.17 (CVE-2024-5187);
        # s3tok checks external-data references itself as well
        "onnx>=1.17",
        "soundfile",
        "kaldi-native-io",
        "tqdm",
        "safetensors",
    ],
    extras_require={
        # kaldiio only in tests, to prove its users can read our ark/scp (its licence is evaluation-only)
        "test": ["pytest", "onnxruntime", "kaldiio", "matplotlib", "pyarrow", "pandas"],
        "parity": ["onnxruntime"],
        "plots": ["matplotlib"],
        # what the recipes' stages need beyond the tokenizer: parity (stage 4), plots (5), parquet shards (7)
        "recipes": ["onnxruntime", "matplotlib", "pyarrow"],
        # --parquet_list input (CosyVoice's and Hugging Face's parquet shards)
        "parquet": ["pyarrow"],
    },
    entry_points={"console_scripts": ["s3tok=s3tok.cli:main"]},
)
