"""Neural networks: DGCNN and transformer backbones, heads, LoRA, model files, export.

Public API::

    build_model(config) -> JetModel          # config: ModelConfig or its to_dict() form
    JetModel.forward(x (B,P,15), mask (B,P) bool) -> (embedding (B,D), scores (B,H))
    Backbone                                 # base of DGCNN / ParticleTransformer: config, input_dim, output_dim
    save_model(path, model, card) / load_model(path) -> (model, card)   # NAME.safetensors + NAME.json
    load_published_rs3l(path) -> JetModel    # published RS3L checkpoints
    export_torchscript(model, path) / export_onnx(model, path)
"""

from rs3l_coffea.nn.backbone import Backbone
from rs3l_coffea.nn.build import build_backbone, build_model
from rs3l_coffea.nn.config import (
    DGCNNConfig,
    HeadConfig,
    LoRAConfig,
    ModelConfig,
    TransformerConfig,
)
from rs3l_coffea.nn.dgcnn import DGCNN
from rs3l_coffea.nn.edge_conv import DenseDynamicEdgeConv, dense_knn
from rs3l_coffea.nn.export import export_onnx, export_torchscript
from rs3l_coffea.nn.heads import ClassificationHead
from rs3l_coffea.nn.jet_model import JetModel
from rs3l_coffea.nn.lora import LoRALinear, apply_lora, has_lora, merge_lora
from rs3l_coffea.nn.model_file import ModelCard, load_model, model_paths, save_model
from rs3l_coffea.nn.published import load_published_rs3l
from rs3l_coffea.nn.transformer import ParticleTransformer

__all__ = [
    "DGCNN",
    "Backbone",
    "ClassificationHead",
    "DGCNNConfig",
    "DenseDynamicEdgeConv",
    "HeadConfig",
    "JetModel",
    "LoRAConfig",
    "LoRALinear",
    "ModelCard",
    "ModelConfig",
    "ParticleTransformer",
    "TransformerConfig",
    "apply_lora",
    "build_backbone",
    "build_model",
    "dense_knn",
    "export_onnx",
    "export_torchscript",
    "has_lora",
    "load_model",
    "load_published_rs3l",
    "merge_lora",
    "model_paths",
    "save_model",
]
