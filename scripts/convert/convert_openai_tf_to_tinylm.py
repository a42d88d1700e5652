"""Convert OpenAI's original TensorFlow GPT-2 release folder to a TinyLM folder, without TensorFlow.

Usage: python scripts/convert/convert_openai_tf_to_tinylm.py models/124M OUTPUT [--dtype ...] [--overwrite]
Same as `tinylm convert models/124M OUTPUT`; see `--help`.
"""

import sys

from hf_tinylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:], "--to", "tinylm"]))
