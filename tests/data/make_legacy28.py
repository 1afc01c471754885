# Made once with the code before issue 15 (commit 2e2e0eb): a tiny run folder and the codes it gives.
import numpy as np, json, shutil
from pathlib import Path
from PIL import Image
from hashing.train.recipes import resolve
from hashing.train.loop import train
from hashing.images.datasets import load_dataset
from hashing.images.reader import read_image
from hashing.model.encode import encode_array
from hashing.model import checkpoint
out = Path("tests/data/legacy28")
shutil.rmtree(out, ignore_errors=True)
data = load_dataset("digits", "train").head(512)
cfg, tcfg = resolve("default", "digits", len(data), bits=32, width=8, epochs=3, device="cpu", batch_size=64)
train(cfg, tcfg, data, out, progress=False)
for p in out.glob("history*"): p.unlink()
man = json.loads((out/"config.json").read_text()); man["files"].pop("history", None)
(out/"config.json").write_text(json.dumps(man, indent=1))
model = checkpoint.load(out, "cpu").model
test = load_dataset("digits", "test")
codes = encode_array(model, test.images[:64], progress=False).codes
# three files of other shapes/modes, read through today's read_image
rng = np.random.default_rng(0)
Image.fromarray(test.images[0]).resize((40, 30)).save(out.parent / "legacy_wide.png")
Image.fromarray(np.stack([test.images[1]]*3, -1)).save(out.parent / "legacy_rgb.png")
file_codes = encode_array(model, np.stack([read_image(out.parent / f) for f in ("legacy_wide.png", "legacy_rgb.png")]), progress=False).codes
np.savez(out.parent / "legacy28_codes.npz", digits_test_64=codes, files=file_codes)
print(codes[:2], file_codes)
