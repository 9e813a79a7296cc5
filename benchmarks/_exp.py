import time, torch, torchvision, statistics as st, sys, copy, os
import inceptorch
from inceptorch.inference import fold_batch_norms, fuse_graph
torch.manual_seed(0)
name, size, B = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
extra = sys.argv[5].split(",") if len(sys.argv) > 5 else []
CL = torch.channels_last
ours = inceptorch.create_model(name).eval()
tv = getattr(torchvision.models, name)(weights=None, init_weights=False, aux_logits=False).eval()
tv.load_state_dict(ours.state_dict())
x = torch.randn(B, 3, size, size)
xcl = x.contiguous(memory_format=CL)
def cl(m): return m.to(memory_format=CL)
def folded(): return fold_batch_norms(copy.deepcopy(ours))
V = {}
V["tv_eager"] = (tv, x)
V["tv_cl"] = (cl(copy.deepcopy(tv)), xcl)
V["fold_cl"] = (cl(folded()), xcl)
V["fused_dense_cl"] = (cl(fuse_graph(folded(), merge=False, pack=False)), xcl)
V["fused_packed_cl"] = (cl(fuse_graph(folded(), merge=False)), xcl)
V["fused_packed_merged_cl"] = (cl(fuse_graph(folded(), merge=True)), xcl)
V["fused_packed_nchw"] = (fuse_graph(folded(), merge=False), x)
if "compile" in extra:
    import torch._inductor.config as c
    c.freezing = True
    t = time.perf_counter()
    m = torch.compile(cl(folded()))
    with torch.no_grad(): m(xcl)
    print("compile time", time.perf_counter() - t)
    V["compile_freeze_cl"] = (m, xcl)
import onnxruntime as ort, io
buf = io.BytesIO(); torch.onnx.export(ours, (x,), buf, dynamo=False, opset_version=17)
so = ort.SessionOptions(); so.intra_op_num_threads = torch.get_num_threads()
sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
xn = x.numpy()
V["ort"] = (lambda xx: sess.run(None, {sess.get_inputs()[0].name: xn}), x)
with torch.no_grad():
    ref = ours(x)
    for k, (f, xx) in V.items():
        out = f(xx); out = torch.as_tensor(out[0]) if isinstance(out, list) else out
        assert (out - ref).abs().max().item() < 1e-4, k
times = {k: [] for k in V}
with torch.inference_mode():
    for k, (f, xx) in V.items(): f(xx)
    for r in range(rounds):
        for k, (f, xx) in V.items():
            t = time.perf_counter(); f(xx); times[k].append(time.perf_counter() - t)
base = B / st.median(times["tv_eager"])
print(name, size, B, "threads", torch.get_num_threads())
for k in V:
    ips = B / st.median(times[k])
    print(f"{k:24s} {ips:7.2f} img/s  x{ips/base:.2f}")
