"""The 30 ImageNet VID classes in the devkit's order (label index 1..30).

Label 0 is the background everywhere in stmn-tf; the devkit's `meta_vid.mat` lists
these synsets in this order, so label `i` here is the devkit's class `i`.
"""

VID_CLASSES = (
    ("n02691156", "airplane"),
    ("n02419796", "antelope"),
    ("n02131653", "bear"),
    ("n02834778", "bicycle"),
    ("n01503061", "bird"),
    ("n02924116", "bus"),
    ("n02958343", "car"),
    ("n02402425", "cattle"),
    ("n02084071", "dog"),
    ("n02121808", "domestic_cat"),
    ("n02503517", "elephant"),
    ("n02118333", "fox"),
    ("n02510455", "giant_panda"),
    ("n02342885", "hamster"),
    ("n02374451", "horse"),
    ("n02129165", "lion"),
    ("n01674464", "lizard"),
    ("n02484322", "monkey"),
    ("n03790512", "motorcycle"),
    ("n02324045", "rabbit"),
    ("n02509815", "red_panda"),
    ("n02411705", "sheep"),
    ("n01726692", "snake"),
    ("n02355227", "squirrel"),
    ("n02129604", "tiger"),
    ("n04468005", "train"),
    ("n01662784", "turtle"),
    ("n04530566", "watercraft"),
    ("n02062744", "whale"),
    ("n02391049", "zebra"),
)

VID_SYNSETS = tuple(synset for synset, _ in VID_CLASSES)
VID_CLASS_NAMES = tuple(name for _, name in VID_CLASSES)
NUM_VID_CLASSES = len(VID_CLASSES)


def synset_to_label(classes=VID_CLASSES):
    """Returns {synset: (label index 1..C, name)} for a sequence of (synset, name)."""
    return {synset: (i + 1, name) for i, (synset, name) in enumerate(classes)}


def read_class_file(path):
    """Reads a class list: one `synset name` pair a line, in label order (1..C).

    Blank lines and lines starting with `#` are ignored. Returns a tuple of
    (synset, name) pairs, the form `VID_CLASSES` has.
    """
    classes = []
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{line_number}: expected 'synset name', got {line!r}")
            classes.append((parts[0], parts[1]))
    if not classes:
        raise ValueError(f"{path}: no classes")
    return tuple(classes)


def write_class_file(path, classes):
    """Writes (synset, name) pairs in the form `read_class_file` reads."""
    with open(path, "w") as f:
        for synset, name in classes:
            f.write(f"{synset} {name}\n")
