"""Export a GPT-2-compatible TinyLM checkpoint to a standard Transformers GPT-2 folder.

Usage: python scripts/convert/convert_tinylm_to_gpt2.py SOURCE OUTPUT [--dtype ...] [--overwrite]
Same as `tinylm convert SOURCE OUTPUT --to gpt2`; see `--help`.
"""

import sys

from hf_tinylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:], "--to", "gpt2"]))
