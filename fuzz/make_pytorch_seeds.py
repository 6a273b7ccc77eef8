#!/usr/bin/env python3
"""Writes the small pytorch fuzz seeds into fuzz/seeds/pytorch and their data.pkl into fuzz/seeds/pytorch_pickle (no torch needed).

The pickles are made by Python's own pickler (protocol 2, with memo BINPUT/BINGET as torch.save writes them) from
stand-in classes that pickle as torch's globals; the zips are stored (uncompressed) like torch.save's, with a
64-byte-aligned layout left out (the reader does not need it). A few tensors of 1-6 elements keep each seed under
2 kB, so AFL runs thousands of executions a second instead of ~380 on the 532 kB tiny-original checkpoint.
"""
import collections, io, os, pickle, struct, sys, types, zipfile

def fake(module, name):
    mod = sys.modules.setdefault(module, types.ModuleType(module))
    if module == "torch._utils":
        sys.modules["torch"]._utils = mod
    obj = type(name, (), {"__module__": module, "__qualname__": name})
    setattr(mod, name, obj)
    return obj

sys.modules.setdefault("torch", types.ModuleType("torch"))
rebuild_tensor_v2 = fake("torch._utils", "_rebuild_tensor_v2")
rebuild_parameter = fake("torch._utils", "_rebuild_parameter")
storage_types = {n: fake("torch", n) for n in ["FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage"]}
float32 = fake("torch", "float32")

class Storage:
    def __init__(self, kind, key, numel): self.kind, self.key, self.numel = kind, key, numel

class Tensor:
    def __init__(self, storage, offset, size, stride): self.args = (storage, offset, size, stride, False, collections.OrderedDict())
    def __reduce__(self): return (rebuild_tensor_v2, self.args)

class Parameter:
    def __init__(self, tensor): self.tensor = tensor
    def __reduce__(self): return (rebuild_parameter, (self.tensor, True, collections.OrderedDict()))

class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None

def dumps(obj):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()

def write(path, prefix, state, storages):
    pkl = dumps(state)
    with open(os.path.join(out_pickle, os.path.basename(path).replace(".bin", ".pkl")), "wb") as f:
        f.write(pkl)   # the pytorch_pickle target builds the zip itself (storages "0".."3" of 64 bytes)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        def add(name, data):   # a fixed timestamp keeps the output byte-identical from run to run
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        add(f"{prefix}/data.pkl", pkl)
        add(f"{prefix}/byteorder", "little")
        for key, data in storages.items():
            add(f"{prefix}/data/{key}", data)
        add(f"{prefix}/version", "3\n")

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "pytorch")
out_pickle = os.path.join(os.path.dirname(out), "pytorch_pickle")
os.makedirs(out, exist_ok=True)
os.makedirs(out_pickle, exist_ok=True)

# 1. A state dict in torch's shape: F32 matrix with an offset, a row of it sharing the storage, BF16, F16, I64, scalar.
s0 = Storage(storage_types["FloatStorage"], "0", 8)
s1 = Storage(storage_types["BFloat16Storage"], "1", 4)
s2 = Storage(storage_types["HalfStorage"], "2", 2)
s3 = Storage(storage_types["LongStorage"], "3", 2)
state = {
    "backbone.embedding.weight": Tensor(s0, 2, (2, 3), (3, 1)),
    "backbone.layers.0.mixer.D": Tensor(s0, 5, (3,), (1,)),
    "backbone.layers.0.mixer.A_log": Tensor(s1, 0, (2, 2), (2, 1)),
    "backbone.norm_f.weight": Tensor(s2, 0, (2,), (1,)),
    "position_ids": Tensor(s3, 0, (1, 2), (2, 1)),
    "scalar": Tensor(s0, 7, (), ()),
}
write(os.path.join(out, "small.bin"), "pytorch_model", state, {
    "0": struct.pack("<8f", 9, 9, 1, 2, 3, 4, 5, 6),
    "1": struct.pack("<4H", 0x3F80, 0xC000, 0x4049, 0x7F80),
    "2": struct.pack("<2e", 0.5, -1.5),
    "3": struct.pack("<2q", 5, -6),
})

# 2. An OrderedDict with _metadata (REDUCE + BUILD, as a module's state_dict() pickles), a Parameter wrapper and
#    a storage typed by a dtype object (torch.float32) instead of a storage class.
od = collections.OrderedDict()
od["lm_head.weight"] = Parameter(Tensor(Storage(storage_types["FloatStorage"], "0", 2), 0, (1, 2), (2, 1)))
od["w"] = Tensor(Storage(float32, "1", 1), 0, (1,), (1,))
od._metadata = collections.OrderedDict([("", {"version": 1})])
write(os.path.join(out, "ordered.bin"), "archive", od, {
    "0": struct.pack("<2f", 7, 8),
    "1": struct.pack("<f", 3),
})
# 3. The data.pkl of the shared tiny-original fixture (real torch.save output), when the fixtures are at hand.
fixture = os.path.join(os.path.dirname(out), "..", "..", "..", "shared", "fixtures", "models", "tiny-original", "pytorch_model.bin")
if os.path.exists(fixture):
    with zipfile.ZipFile(fixture) as z, open(os.path.join(out_pickle, "tiny-original.pkl"), "wb") as f:
        f.write(z.read("pytorch_model/data.pkl"))
for d in (out, out_pickle):
    for f in sorted(os.listdir(d)):
        print(os.path.join(os.path.basename(d), f), os.path.getsize(os.path.join(d, f)))
