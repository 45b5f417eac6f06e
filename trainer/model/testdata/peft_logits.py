"""PEFT interop check: load an adapter that peertune wrote onto its base model
with PeftModel.from_pretrained and save the logits it gives on a batch.

    python3 peft_logits.py BASE_DIR ADAPTER_DIR BATCH_JSON OUT.safetensors

The Go test TestPEFTInteropGolden compares peertune's logits for the same
adapter against the committed output (interop/peft_logits.safetensors); when
torch and peft are importable it also runs this script live on a freshly
written adapter.
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


def main():
    base_dir, adapter_dir, batch_path, out_path = sys.argv[1:5]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    with open(batch_path) as f:
        batch = json.load(f)
    ids = torch.tensor(batch["input_ids"], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().contiguous()
    save_file({"logits": logits}, out_path, metadata={"format": "pt"})
    print(f"wrote {out_path}: logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
