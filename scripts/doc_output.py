"""Writing generated tables into docs/ without losing the analysis written under them."""
import os

READING = "\n## Reading"

def write_keeping_reading(path, generated):
    """Writes `generated` to `path`, keeping the hand-written section that starts at a "## Reading"
    heading in the existing file: the numbers are regenerated, the analysis stays (and is checked by
    hand against them)."""
    reading = ""
    if os.path.exists(path):
        old = open(path).read()
        if READING in old:
            reading = old[old.index(READING):]
    open(path, "w").write(generated + reading)


def replace_section(path, heading, section):
    """Replaces the section of `path` that starts at the line `heading` ("## Tokenization") up to the
    next "## " heading with `section` (which starts with that heading), or appends it: a command that
    measures one section leaves the others as they are."""
    text = open(path).read() if os.path.exists(path) else ""
    start = text.find("\n" + heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = text.find("\n## ", start + 1)
        rest = text[end:] if end >= 0 else "\n"
        text = text[:start + 1] + section.rstrip("\n") + "\n" + rest
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
