"""The `tinylm` commands, one module each, all of one shape:

    HELP         one line for `tinylm --help`
    DESCRIPTION  the paragraph of `tinylm COMMAND --help`
    SETTINGS     the dataclass whose `option` fields are the command's flags (see `hf_tinylm.flags`)
    run(settings) -> int   does the work (its heavy modules are imported here, when the command runs)

A new command is a new module here plus its name in `COMMANDS`.
"""

COMMANDS = ("train", "generate", "info", "demo", "convert", "compare")
