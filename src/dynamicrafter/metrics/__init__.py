"""Evaluation metrics as the DynamiCrafter paper reports them: FVD, KVD, PIC, plus model-free video metrics.

* :mod:`.frechet` - Frechet distance (FVD on I3D logits), numerically stable matrix square root;
* :mod:`.kernel` - polynomial-kernel MMD^2 (KVD), unbiased, single-pass and subset forms;
* :mod:`.i3d` - the I3D network and the FVD feature extractor (VideoGPT/TATS state dict or StyleGAN-V TorchScript);
* :mod:`.dreamsim` - DreamSim (PIC's distance) with a converter from DreamSim's distributed files;
* :mod:`.lpips` - LPIPS-Alex, an explicitly chosen and labelled stand-in distance for PIC;
* :mod:`.model_free` - temporal flicker, first-frame PSNR/SSIM, motion magnitude;
* :mod:`.bootstrap` - percentile-bootstrap intervals of per-item figures and of paired differences;
* :mod:`.features` - per-video feature extraction with a resumable, shard-mergeable disk cache;
* :mod:`.evaluate` - the ``dynamicrafter evaluate`` runner.
"""

from dynamicrafter.metrics.dreamsim import (
    DreamSim,
    DreamSimConfig,
    DreamSimDistance,
    convert_dreamsim_checkpoint,
    dreamsim_config,
    load_dreamsim,
    pic_from_distances,
    standin_dreamsim_config,
)
from dynamicrafter.metrics.evaluate import (
    EvaluateConfig,
    EvaluationResult,
    evaluate,
    pair_inputs,
    per_video_metrics,
)
from dynamicrafter.metrics.features import (
    FeatureCache,
    RecordCache,
    VideoItem,
    extract_features,
    feature_cache,
    load_features,
)
from dynamicrafter.metrics.frechet import feature_statistics, frechet_distance, frechet_distance_from_features
from dynamicrafter.metrics.i3d import FVDConfig, I3DConfig, I3DFeatureExtractor, InceptionI3D
from dynamicrafter.metrics.kernel import KernelConfig, kernel_distance, mmd2_biased, mmd2_unbiased
from dynamicrafter.metrics.model_free import (
    ModelFreeMetrics,
    model_free_metrics,
    motion_magnitude,
    psnr,
    ssim,
    temporal_flicker,
)
from dynamicrafter.metrics.weights import MissingWeightsError, require_weights, resolve_weights

__all__ = [
    "DreamSim", "DreamSimConfig", "DreamSimDistance", "EvaluateConfig", "EvaluationResult", "FVDConfig",
    "FeatureCache", "I3DConfig", "I3DFeatureExtractor", "InceptionI3D", "KernelConfig", "MissingWeightsError",
    "ModelFreeMetrics", "RecordCache", "VideoItem", "convert_dreamsim_checkpoint", "dreamsim_config", "evaluate",
    "extract_features", "feature_cache", "feature_statistics", "frechet_distance", "frechet_distance_from_features",
    "kernel_distance", "load_dreamsim", "load_features", "mmd2_biased", "mmd2_unbiased", "model_free_metrics",
    "motion_magnitude", "pair_inputs", "per_video_metrics", "pic_from_distances", "psnr", "require_weights",
    "resolve_weights", "ssim", "standin_dreamsim_config", "temporal_flicker",
]
