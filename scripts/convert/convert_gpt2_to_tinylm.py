"""Convert a Transformers GPT-2 checkpoint (folder or Hub repo id) to a TinyLM folder.

Usage: python scripts/convert/convert_gpt2_to_tinylm.py SOURCE OUTPUT [--dtype ...] [--overwrite]
Same as `tinylm convert SOURCE OUTPUT`; see `--help`.
"""

import sys

from hf_tinylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:], "--to", "tinylm"]))
