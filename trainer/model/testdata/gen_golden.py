#!/usr/bin/env python3
"""Generate golden vectors for peertune's model tests from Hugging Face
transformers + peft (the reference implementation).

    python3 trainer/model/testdata/gen_golden.py trainer/model/testdata

Writes golden/<case>/ for each case below; see README.md beside this file for
what every file holds. Everything is float32 on the CPU, eager attention,
dropout 0, fixed seeds: rerunning with the same library versions reproduces the
same bytes (other versions may differ in the last ulp).
"""

import copy
import json
import os
import shutil
import sys

import torch
import transformers
import peft
import safetensors
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

BATCH, SEQ = 2, 12
IGNORE = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA = 8, 16


def cases():
    common = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
        attention_dropout=0.0,
        attn_implementation="eager",
    )
    return [
        dict(
            name="llama_untied",
            arch="LlamaForCausalLM",
            seed=1234,
            cls=LlamaForCausalLM,
            config=LlamaConfig(
                intermediate_size=176,
                rms_norm_eps=1e-5,
                rope_theta=10000.0,
                tie_word_embeddings=False,
                **common,
            ),
        ),
        dict(
            name="qwen2_tied",
            arch="Qwen2ForCausalLM",
            seed=5678,
            cls=Qwen2ForCausalLM,
            config=Qwen2Config(
                intermediate_size=128,
                rms_norm_eps=1e-6,
                rope_theta=500000.0,
                tie_word_embeddings=True,
                use_sliding_window=False,
                **common,
            ),
        ),
    ]


def randomize_base(model, gen):
    """Moderate random init so every weight matters: matrices and embeddings
    N(0, 0.1), RMSNorm weights 1 + N(0, 0.1), biases N(0, 0.1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def make_batch(gen, vocab):
    ids = torch.randint(0, vocab, (BATCH, SEQ), generator=gen, dtype=torch.long)
    labels = ids.clone()
    labels[0, :3] = IGNORE  # prompt prefix of row 0
    labels[1, :5] = IGNORE  # longer prompt prefix of row 1 ...
    labels[1, 8] = IGNORE  # ... and a masked token in the middle
    return ids, labels


def forward(model, lm_head, ids, labels):
    """Returns (logits, loss, hidden) where hidden is the input of lm_head
    (the final RMSNorm's output)."""
    captured = {}

    def hook(_mod, inputs):
        captured["hidden"] = inputs[0]

    h = lm_head.register_forward_pre_hook(hook)
    try:
        out = model(input_ids=ids, labels=labels, use_cache=False)
    finally:
        h.remove()
    return out.logits, out.loss, captured["hidden"]


def peft_key(param_name):
    """Parameter name in the live PeftModel -> key in adapter_model.safetensors
    (PEFT drops the adapter name, "default")."""
    return param_name.replace(".default.", ".")


def run_case(case, root):
    name, cfg, cls = case["name"], case["config"], case["cls"]
    out_dir = os.path.join(root, "golden", name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])

    base = cls(cfg).to(torch.float32).eval()  # eval(): no dropout anywhere
    randomize_base(base, gen)
    ids, labels = make_batch(gen, cfg.vocab_size)

    # --- base model, full fine-tuning --------------------------------------
    base.save_pretrained(out_dir, safe_serialization=True)
    gen_cfg = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    saved_keys = set(load_file(os.path.join(out_dir, "model.safetensors")).keys())

    for p in base.parameters():
        p.requires_grad_(True)
        p.grad = None
    base_logits, base_loss, _ = forward(base, base.lm_head, ids, labels)
    base_loss.backward()
    outputs = {
        "base_logits": base_logits.detach().clone(),
        "base_loss": base_loss.detach().reshape(1).clone(),
    }
    # named_parameters() yields a tied weight once (as model.embed_tokens.weight),
    # so its gradient already sums the embedding and lm_head contributions.
    full_keys = set()
    for pname, p in base.named_parameters():
        assert p.grad is not None, pname
        outputs["fullgrad." + pname] = p.grad.detach().clone()
        full_keys.add(pname)
    assert full_keys == saved_keys, (full_keys ^ saved_keys)
    base.zero_grad(set_to_none=True)

    # --- LoRA --------------------------------------------------------------
    lora_cfg = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )
    lmodel = get_peft_model(copy.deepcopy(base), lora_cfg).eval()
    with torch.no_grad():
        for pname, p in lmodel.named_parameters():
            if "lora_B" in pname:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
    trainable = {n: p for n, p in lmodel.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable), [n for n in trainable if "lora_" not in n]

    lm_head = lmodel.get_output_embeddings()
    logits, loss, hidden = forward(lmodel, lm_head, ids, labels)
    loss.backward()
    outputs["logits"] = logits.detach().clone()
    outputs["loss"] = loss.detach().reshape(1).clone()
    outputs["hidden"] = hidden.detach().clone()

    adapter_dir = os.path.join(out_dir, "adapter")
    lmodel.save_pretrained(adapter_dir, safe_serialization=True)
    readme = os.path.join(adapter_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)  # PEFT's model-card boilerplate
    # PEFT stores target_modules as a set, so its JSON order follows Python's
    # per-process string hashing; sort it so reruns write the same bytes.
    acfg_path = os.path.join(adapter_dir, "adapter_config.json")
    with open(acfg_path) as f:
        acfg = json.load(f)
    if isinstance(acfg.get("target_modules"), list):
        acfg["target_modules"] = sorted(acfg["target_modules"])
    with open(acfg_path, "w") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
        f.write("\n")
    adapter_keys = set(load_file(os.path.join(adapter_dir, "adapter_model.safetensors")).keys())
    assert adapter_keys == set(get_peft_model_state_dict(lmodel).keys())
    grad_keys = set()
    for pname, p in trainable.items():
        key = peft_key(pname)
        assert key in adapter_keys, (pname, key)
        outputs["grad." + key] = p.grad.detach().clone()
        grad_keys.add(key)
    assert grad_keys == adapter_keys, (grad_keys ^ adapter_keys)

    meta = {
        "architecture": case["arch"],
        "case": name,
        "lora_r": str(LORA_R),
        "lora_alpha": str(LORA_ALPHA),
        "lora_scaling": repr(LORA_ALPHA / LORA_R),
        "labels": "unshifted (HF style): logits[:, t] predict labels[:, t+1]",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    save_file(
        {k: v.contiguous().to(torch.float32) for k, v in outputs.items()},
        os.path.join(out_dir, "outputs.safetensors"),
        metadata=meta,
    )
    sort_metadata(os.path.join(out_dir, "outputs.safetensors"))
    batch = {
        "architecture": case["arch"],
        "input_ids": ids.tolist(),
        "labels": labels.tolist(),
        "labels_shifted": False,
        "note": "labels are UNSHIFTED, HF style: the model shifts inside, logits[b][t] "
        "predict labels[b][t+1]; -100 is ignored; loss is the mean over "
        "non-ignored shifted targets",
        "ignore_index": IGNORE,
        "attention_mask": "all ones (no padding)",
    }
    with open(os.path.join(out_dir, "batch.json"), "w") as f:
        json.dump(batch, f, indent=1)
        f.write("\n")

    # --- sanity: reload everything from disk, compare -----------------------
    reloaded = cls.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        rl, rloss, _ = forward(reloaded, reloaded.lm_head, ids, labels)
        assert torch.allclose(rl, outputs["base_logits"], atol=1e-6, rtol=0), "reloaded base logits differ"
        rpeft = PeftModel.from_pretrained(reloaded, adapter_dir).eval()
        pl, ploss, _ = forward(rpeft, rpeft.get_output_embeddings(), ids, labels)
        assert torch.allclose(pl, outputs["logits"], atol=1e-6, rtol=0), "reloaded adapter logits differ"
        assert abs(ploss.item() - loss.item()) < 1e-6
    # The adapter changes the output (lora_B is non-zero).
    assert (outputs["logits"] - outputs["base_logits"]).abs().max() > 1e-2

    n_masked = int((labels[:, 1:] == IGNORE).sum())
    print(
        f"{name}: {case['arch']} base_loss={base_loss.item():.6f} lora_loss={loss.item():.6f} "
        f"targets={labels[:, 1:].numel() - n_masked} base_params={len(full_keys)} "
        f"lora_params={len(adapter_keys)} max|dlogits|="
        f"{(outputs['logits'] - outputs['base_logits']).abs().max().item():.4f}"
    )
    print(f"  adapter keys e.g. {sorted(adapter_keys)[:2]}")


def sort_metadata(path):
    """safetensors (Rust) writes __metadata__ in HashMap order, which changes
    from run to run; rewrite the header in place with sorted metadata keys so
    reruns produce the same bytes. Tensor data is untouched."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n, "rewritten header grew"
    text += b" " * (n - len(text))  # same length, same space padding
    with open(path, "wb") as f:
        f.write(raw[:8] + text + raw[8 + n :])


def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_golden.py OUT_DIR   (e.g. trainer/model/testdata)")
    root = sys.argv[1]
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed reduction order
    torch.set_default_dtype(torch.float32)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, safetensors {safetensors.__version__}"
    )
    for case in cases():
        run_case(case, root)
    size = du(os.path.join(root, "golden"))
    print(f"golden/ total {size} bytes ({size / 2**20:.2f} MiB)")
    assert size < 2 * 2**20, "golden data over 2 MiB: shrink a case"


if __name__ == "__main__":
    main()
