"""The 71 AVSBench-semantic (AVSS) classes, background first, in AVSBench's index order."""

AVSS_CLASSES: tuple[str, ...] = (
    "background", "accordion", "airplane", "axe", "baby", "bassoon", "bell", "bird", "boat", "boy",
    "bus", "car", "cat", "cello", "clarinet", "clipper", "clock", "dog", "donkey", "drum", "duck",
    "elephant", "emergency-car", "erhu", "flute", "frying-food", "girl", "goose", "guitar", "gun",
    "guzheng", "hair-dryer", "handpan", "harmonica", "harp", "helicopter", "hen", "horse", "keyboard",
    "leopard", "lion", "man", "marimba", "missile-rocket", "motorcycle", "mower", "parrot", "piano",
    "pig", "pipa", "saw", "saxophone", "sheep", "sitar", "sorna", "squirrel", "tabla", "tank",
    "tiger", "tractor", "train", "trombone", "truck", "trumpet", "tuba", "ukulele", "utv",
    "vacuum-cleaner", "violin", "wolf", "woman",
)  # fmt: skip

AVSS_LABEL2IDX: dict[str, int] = {name: i for i, name in enumerate(AVSS_CLASSES)}
