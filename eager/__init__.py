"""eager: EAGER-LLM, generative recommendation with dual-source item codes."""

import logging
import os

__version__ = "0.1.0"

# Nothing in eager downloads at run time: the backbone, the text encoder and the data are local.
# bitsandbytes (which peft imports) is the exception unless told otherwise: on a CPU with AVX512-BF16
# it asks the Hugging Face hub for a 4-bit GEMM kernel at import, to run code fetched there. Every
# NF4 number in the README ran bitsandbytes' bundled kernel, so the hub stays offline unless the
# user sets HF_HUB_OFFLINE themselves, and the two warnings about that one kernel (the fallback's
# reads like a broken install: "make sure you pip install kernels") are dropped; others pass.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
_HUB_GEMM_KERNEL = "kernels-community/quantization-bitsandbytes"


def _not_about_the_hub_gemm_kernel(record: logging.LogRecord) -> bool:
    return _HUB_GEMM_KERNEL not in record.getMessage()


for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).addFilter(_not_about_the_hub_gemm_kernel)
