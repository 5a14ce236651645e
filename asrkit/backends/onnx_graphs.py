"""ONNX graphs of asrkit's models, written by torch's own exporter (``torch.onnx.export``) for onnxruntime.

The issue asked for optimum's exporters; optimum-onnx 0.1.0 (its only release) pins transformers<4.58, which
asrkit's transformers 5 excludes, so the graphs are traced from asrkit's own small wrapper modules:

- CTC (wav2vec2 and kin): ``model.onnx``, ``input_values`` [, ``attention_mask``] -> ``logits``, batch and time
  dynamic; the attention mask is an input when the feature extractor makes one (as the PyTorch model is fed).
- Whisper: ``encoder.onnx``, ``input_features`` -> every decoder layer's cross-attention keys and values
  (computed once per utterance), and ``decoder.onnx``, one step with a key/value cache: ``input_ids`` (the
  prompt first, then one token), the cache so far (``past_keys``/``past_values``, layers x batch x heads x
  positions x head size, zero positions at the start) and the cross-attention keys/values -> the last position's
  ``logits`` and the cache grown by the new tokens. The decoder layer is written out here with the PyTorch
  model's own submodules (projections, layer norms, feed-forward) because transformers 5's ``Cache`` objects do
  not trace into graph inputs; it computes what ``WhisperDecoderLayer`` computes (pre-norm self-attention with
  the query scaled before the product, cross-attention, feed-forward), which the tests check against generate.

``quantize_int8`` is onnxruntime's dynamic quantization of the matrix products (``MatMul``, ``Gemm``): int8
weights, activations quantised per batch at run time. Convolutions stay float32: wav2vec2's positional
convolution has a weight-normalised kernel, computed in the graph, which the quantizer cannot take as a weight.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asrkit.extras import require

log = logging.getLogger(__name__)

OPSET = 18  # the default opset of torch 2.11's exporter
PROTOBUF_LIMIT = 2**31 - 1  # bytes of one .onnx file; larger weights go to <graph>.onnx.data beside it


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, positions, width) -> (batch, heads, positions, head size)."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    weights = query @ keys.transpose(-1, -2)  # the query is already scaled, as in WhisperAttention
    if mask is not None:
        weights = weights.masked_fill(~mask, float("-inf"))
    out = torch.softmax(weights, dim=-1) @ values
    return out.transpose(1, 2).reshape(query.shape[0], query.shape[2], -1)


class WhisperEncoderGraph(nn.Module):
    """log-mel features -> cross-attention keys and values of every decoder layer (layers x batch x heads x ...)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.layers = model.model.decoder.layers
        self.heads = model.config.decoder_attention_heads

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.encoder(input_features).last_hidden_state
        keys = [_heads(layer.encoder_attn.k_proj(states), self.heads) for layer in self.layers]
        values = [_heads(layer.encoder_attn.v_proj(states), self.heads) for layer in self.layers]
        return torch.stack(keys), torch.stack(values)


class WhisperDecoderGraph(nn.Module):
    """One decoding step with a key/value cache (see the module docstring)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.decoder = model.model.decoder
        self.proj_out = model.proj_out
        self.heads = model.config.decoder_attention_heads

    def forward(
        self,
        input_ids: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        past, new = past_keys.shape[3], input_ids.shape[1]
        positions = torch.arange(new, device=input_ids.device) + past
        states = self.decoder.embed_tokens(input_ids) + self.decoder.embed_positions.weight[positions]
        visible = torch.arange(past + new, device=input_ids.device)[None, :] <= positions[:, None]  # causal
        all_keys, all_values = [], []
        for index, layer in enumerate(self.decoder.layers):
            attention, x = layer.self_attn, layer.self_attn_layer_norm(states)
            query = _heads(attention.q_proj(x) * attention.scaling, self.heads)
            keys = torch.cat([past_keys[index], _heads(attention.k_proj(x), self.heads)], dim=2)
            values = torch.cat([past_values[index], _heads(attention.v_proj(x), self.heads)], dim=2)
            all_keys.append(keys)
            all_values.append(values)
            states = states + attention.out_proj(_attend(query, keys, values, visible))
            cross, x = layer.encoder_attn, layer.encoder_attn_layer_norm(states)
            query = _heads(cross.q_proj(x) * cross.scaling, self.heads)
            states = states + cross.out_proj(_attend(query, cross_keys[index], cross_values[index], None))
            x = layer.final_layer_norm(states)
            states = states + layer.fc2(layer.activation_fn(layer.fc1(x)))
        logits = self.proj_out(self.decoder.layer_norm(states[:, -1]))
        return logits, torch.stack(all_keys), torch.stack(all_values)


class CTCGraph(nn.Module):
    """Waveforms (and their attention mask) -> CTC logits."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_values=input_values, attention_mask=attention_mask).logits


def _weight_bytes(module: nn.Module) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in module.state_dict().values())


def _export(module: nn.Module, args: tuple, names: tuple[list[str], list[str]], shapes: dict, path: Path) -> None:
    """``torch.onnx.export`` (the dynamo exporter) with named inputs/outputs and dynamic dimensions."""
    require("onnxscript", "format=onnx")
    inputs, outputs = names
    program = torch.onnx.export(
        module,
        args,
        input_names=inputs,
        output_names=outputs,
        dynamic_shapes=shapes,
        opset_version=OPSET,
        dynamo=True,
        external_data=_weight_bytes(module) > PROTOBUF_LIMIT // 2,
        verbose=False,
    )
    program.save(str(path))


@torch.no_grad()
def export_whisper(model: Any, folder: Path) -> list[str]:
    """``encoder.onnx`` and ``decoder.onnx`` of a WhisperForConditionalGeneration (float32, eval mode)."""
    model = model.float().eval()
    config, batch = model.config, torch.export.Dim("batch", min=1, max=1024)
    features = torch.zeros(2, config.num_mel_bins, 2 * config.max_source_positions)
    encoder = WhisperEncoderGraph(model).eval()
    cross_keys, cross_values = encoder(features)
    _export(
        encoder,
        (features,),
        (["input_features"], ["cross_keys", "cross_values"]),
        {"input_features": {0: batch}},
        folder / "encoder.onnx",
    )
    heads, size = config.decoder_attention_heads, config.d_model // config.decoder_attention_heads
    past = torch.zeros(config.decoder_layers, 2, heads, 3, size)
    new, positions = torch.export.Dim("new", min=1, max=64), torch.export.Dim("past", min=0, max=4096)
    cache = {1: batch, 3: positions}
    _export(
        WhisperDecoderGraph(model).eval(),
        (torch.ones(2, 4, dtype=torch.long), past, past.clone(), cross_keys, cross_values),
        (["input_ids", "past_keys", "past_values", "cross_keys", "cross_values"], ["logits", "keys", "values"]),
        {
            "input_ids": {0: batch, 1: new},
            "past_keys": cache,
            "past_values": cache,
            "cross_keys": {1: batch},
            "cross_values": {1: batch},
        },
        folder / "decoder.onnx",
    )
    return ["encoder.onnx", "decoder.onnx"]


@torch.no_grad()
def export_ctc(model: Any, folder: Path, attention_mask: bool) -> list[str]:
    """``model.onnx`` of a CTC model; ``attention_mask``: whether it takes one (its feature extractor says)."""
    model = model.float().eval()
    batch, time = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("samples", min=400, max=16000 * 3600)
    waveforms = torch.randn(2, 16000)
    args: tuple = (waveforms, torch.ones(2, 16000, dtype=torch.long)) if attention_mask else (waveforms,)
    names = ["input_values", "attention_mask"] if attention_mask else ["input_values"]
    shapes = {name: {0: batch, 1: time} for name in names}
    _export(CTCGraph(model).eval(), args, (names, ["logits"]), shapes, folder / "model.onnx")
    return ["model.onnx"]


def quantize_int8(folder: Path, graphs: list[str]) -> None:
    """Each graph replaced by its onnxruntime dynamic int8 quantization (see the module docstring)."""
    require("onnxruntime", "format=onnx quantization=int8")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in graphs:
        path = folder / name
        quantized = path.with_suffix(".int8.onnx")
        quantize_dynamic(
            str(path), str(quantized), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8
        )
        quantized.replace(path)
