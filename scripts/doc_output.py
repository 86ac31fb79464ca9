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
