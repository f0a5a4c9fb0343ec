from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Optimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_UNSPECIFIED: _ClassVar[Optimizer]
    OPTIMIZER_LBFGS: _ClassVar[Optimizer]
    OPTIMIZER_ADAM: _ClassVar[Optimizer]

class Init(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INIT_UNSPECIFIED: _ClassVar[Init]
    INIT_NOISE: _ClassVar[Init]
    INIT_CONTENT: _ClassVar[Init]
    INIT_IMAGE: _ClassVar[Init]
    INIT_FEED_FORWARD: _ClassVar[Init]

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_OPTIMIZATION: _ClassVar[Method]
    METHOD_FEED_FORWARD: _ClassVar[Method]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_AUTO: _ClassVar[Precision]
    PRECISION_FLOAT32: _ClassVar[Precision]
    PRECISION_BFLOAT16: _ClassVar[Precision]
    PRECISION_FLOAT16: _ClassVar[Precision]

class LossNormalization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_NORMALIZATION_UNSPECIFIED: _ClassVar[LossNormalization]
    LOSS_NORMALIZATION_TUTORIAL: _ClassVar[LossNormalization]
    LOSS_NORMALIZATION_SIZE_INDEPENDENT: _ClassVar[LossNormalization]
    LOSS_NORMALIZATION_RELATIVE: _ClassVar[LossNormalization]

class DeadlinePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEADLINE_POLICY_UNSPECIFIED: _ClassVar[DeadlinePolicy]
    DEADLINE_POLICY_BEST_SO_FAR: _ClassVar[DeadlinePolicy]
    DEADLINE_POLICY_STRICT: _ClassVar[DeadlinePolicy]

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_COMPLETED: _ClassVar[StopReason]
    STOP_REASON_TIME_BUDGET: _ClassVar[StopReason]
    STOP_REASON_DEADLINE: _ClassVar[StopReason]

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_JPEG: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_WEBP: _ClassVar[OutputFormat]

class ResizeFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_FILTER_UNSPECIFIED: _ClassVar[ResizeFilter]
    RESIZE_FILTER_NEAREST: _ClassVar[ResizeFilter]
    RESIZE_FILTER_ANTIALIAS: _ClassVar[ResizeFilter]
OPTIMIZER_UNSPECIFIED: Optimizer
OPTIMIZER_LBFGS: Optimizer
OPTIMIZER_ADAM: Optimizer
INIT_UNSPECIFIED: Init
INIT_NOISE: Init
INIT_CONTENT: Init
INIT_IMAGE: Init
INIT_FEED_FORWARD: Init
METHOD_UNSPECIFIED: Method
METHOD_OPTIMIZATION: Method
METHOD_FEED_FORWARD: Method
PRECISION_UNSPECIFIED: Precision
PRECISION_AUTO: Precision
PRECISION_FLOAT32: Precision
PRECISION_BFLOAT16: Precision
PRECISION_FLOAT16: Precision
LOSS_NORMALIZATION_UNSPECIFIED: LossNormalization
LOSS_NORMALIZATION_TUTORIAL: LossNormalization
LOSS_NORMALIZATION_SIZE_INDEPENDENT: LossNormalization
LOSS_NORMALIZATION_RELATIVE: LossNormalization
DEADLINE_POLICY_UNSPECIFIED: DeadlinePolicy
DEADLINE_POLICY_BEST_SO_FAR: DeadlinePolicy
DEADLINE_POLICY_STRICT: DeadlinePolicy
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_COMPLETED: StopReason
STOP_REASON_TIME_BUDGET: StopReason
STOP_REASON_DEADLINE: StopReason
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_PNG: OutputFormat
OUTPUT_FORMAT_JPEG: OutputFormat
OUTPUT_FORMAT_WEBP: OutputFormat
RESIZE_FILTER_UNSPECIFIED: ResizeFilter
RESIZE_FILTER_NEAREST: ResizeFilter
RESIZE_FILTER_ANTIALIAS: ResizeFilter

class Image(_message.Message):
    __slots__ = ("data", "upload_id")
    DATA_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    upload_id: str
    def __init__(self, data: _Optional[bytes] = ..., upload_id: _Optional[str] = ...) -> None: ...

class StylePicture(_message.Message):
    __slots__ = ("image", "blend_weight")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BLEND_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: Image
    blend_weight: float
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., blend_weight: _Optional[float] = ...) -> None: ...

class StyleOptions(_message.Message):
    __slots__ = ("preset", "backbone", "size", "width", "height", "iterations", "evals_per_iteration", "optimizer", "learning_rate", "content_weight", "style_weight", "tv_weight", "tv_power", "content_layers", "style_layers", "style_layer_weights", "style_scale", "preserve_color", "init", "seed", "precision", "resize", "scales", "loss_normalization", "method", "style_strength", "time_budget_seconds", "deadline_policy", "normalization", "region_border", "temporal_weight")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    EVALS_PER_ITERATION_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STYLE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TV_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TV_POWER_FIELD_NUMBER: _ClassVar[int]
    CONTENT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    STYLE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    STYLE_LAYER_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STYLE_SCALE_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_COLOR_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    LOSS_NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STYLE_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_POLICY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    REGION_BORDER_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    preset: str
    backbone: str
    size: int
    width: int
    height: int
    iterations: int
    evals_per_iteration: int
    optimizer: Optimizer
    learning_rate: float
    content_weight: float
    style_weight: float
    tv_weight: float
    tv_power: float
    content_layers: _containers.RepeatedScalarFieldContainer[str]
    style_layers: _containers.RepeatedScalarFieldContainer[str]
    style_layer_weights: _containers.RepeatedScalarFieldContainer[float]
    style_scale: float
    preserve_color: bool
    init: Init
    seed: int
    precision: Precision
    resize: ResizeFilter
    scales: _containers.RepeatedScalarFieldContainer[float]
    loss_normalization: str
    method: Method
    style_strength: float
    time_budget_seconds: float
    deadline_policy: DeadlinePolicy
    normalization: LossNormalization
    region_border: float
    temporal_weight: float
    def __init__(self, preset: _Optional[str] = ..., backbone: _Optional[str] = ..., size: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., iterations: _Optional[int] = ..., evals_per_iteration: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ..., learning_rate: _Optional[float] = ..., content_weight: _Optional[float] = ..., style_weight: _Optional[float] = ..., tv_weight: _Optional[float] = ..., tv_power: _Optional[float] = ..., content_layers: _Optional[_Iterable[str]] = ..., style_layers: _Optional[_Iterable[str]] = ..., style_layer_weights: _Optional[_Iterable[float]] = ..., style_scale: _Optional[float] = ..., preserve_color: _Optional[bool] = ..., init: _Optional[_Union[Init, str]] = ..., seed: _Optional[int] = ..., precision: _Optional[_Union[Precision, str]] = ..., resize: _Optional[_Union[ResizeFilter, str]] = ..., scales: _Optional[_Iterable[float]] = ..., loss_normalization: _Optional[str] = ..., method: _Optional[_Union[Method, str]] = ..., style_strength: _Optional[float] = ..., time_budget_seconds: _Optional[float] = ..., deadline_policy: _Optional[_Union[DeadlinePolicy, str]] = ..., normalization: _Optional[_Union[LossNormalization, str]] = ..., region_border: _Optional[float] = ..., temporal_weight: _Optional[float] = ...) -> None: ...

class DeliveryOptions(_message.Message):
    __slots__ = ("preview_every", "preview_size", "output_format", "output_quality", "max_message_bytes")
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    preview_every: int
    preview_size: int
    output_format: OutputFormat
    output_quality: int
    max_message_bytes: int
    def __init__(self, preview_every: _Optional[int] = ..., preview_size: _Optional[int] = ..., output_format: _Optional[_Union[OutputFormat, str]] = ..., output_quality: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class StyleTransferRequest(_message.Message):
    __slots__ = ("content", "styles", "options", "delivery", "init_image", "request_id", "style_id", "regions", "detachable")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    DETACHABLE_FIELD_NUMBER: _ClassVar[int]
    content: Image
    styles: _containers.RepeatedCompositeFieldContainer[StylePicture]
    options: StyleOptions
    delivery: DeliveryOptions
    init_image: Image
    request_id: str
    style_id: str
    regions: Regions
    detachable: bool
    def __init__(self, content: _Optional[_Union[Image, _Mapping]] = ..., styles: _Optional[_Iterable[_Union[StylePicture, _Mapping]]] = ..., options: _Optional[_Union[StyleOptions, _Mapping]] = ..., delivery: _Optional[_Union[DeliveryOptions, _Mapping]] = ..., init_image: _Optional[_Union[Image, _Mapping]] = ..., request_id: _Optional[str] = ..., style_id: _Optional[str] = ..., regions: _Optional[_Union[Regions, _Mapping]] = ..., detachable: _Optional[bool] = ...) -> None: ...

class Regions(_message.Message):
    __slots__ = ("style_masks", "label_map", "style_colors", "keep_color", "keep_mask")
    STYLE_MASKS_FIELD_NUMBER: _ClassVar[int]
    LABEL_MAP_FIELD_NUMBER: _ClassVar[int]
    STYLE_COLORS_FIELD_NUMBER: _ClassVar[int]
    KEEP_COLOR_FIELD_NUMBER: _ClassVar[int]
    KEEP_MASK_FIELD_NUMBER: _ClassVar[int]
    style_masks: _containers.RepeatedCompositeFieldContainer[Image]
    label_map: Image
    style_colors: _containers.RepeatedScalarFieldContainer[int]
    keep_color: int
    keep_mask: Image
    def __init__(self, style_masks: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., label_map: _Optional[_Union[Image, _Mapping]] = ..., style_colors: _Optional[_Iterable[int]] = ..., keep_color: _Optional[int] = ..., keep_mask: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class RegisterStyleRequest(_message.Message):
    __slots__ = ("styles", "options")
    STYLES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    styles: _containers.RepeatedCompositeFieldContainer[StylePicture]
    options: StyleOptions
    def __init__(self, styles: _Optional[_Iterable[_Union[StylePicture, _Mapping]]] = ..., options: _Optional[_Union[StyleOptions, _Mapping]] = ...) -> None: ...

class RegisterStyleResponse(_message.Message):
    __slots__ = ("style_id", "cached_bytes")
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    CACHED_BYTES_FIELD_NUMBER: _ClassVar[int]
    style_id: str
    cached_bytes: int
    def __init__(self, style_id: _Optional[str] = ..., cached_bytes: _Optional[int] = ...) -> None: ...

class Losses(_message.Message):
    __slots__ = ("total", "content", "style", "tv", "temporal")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    TV_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_FIELD_NUMBER: _ClassVar[int]
    total: float
    content: float
    style: float
    tv: float
    temporal: float
    def __init__(self, total: _Optional[float] = ..., content: _Optional[float] = ..., style: _Optional[float] = ..., tv: _Optional[float] = ..., temporal: _Optional[float] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("queue_seconds", "device", "total_iterations", "job_id", "replica")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    device: str
    total_iterations: int
    job_id: str
    replica: str
    def __init__(self, queue_seconds: _Optional[float] = ..., device: _Optional[str] = ..., total_iterations: _Optional[int] = ..., job_id: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("iteration", "total_iterations", "losses", "elapsed_seconds", "eta_seconds", "stage", "width", "height")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    total_iterations: int
    losses: Losses
    elapsed_seconds: float
    eta_seconds: float
    stage: int
    width: int
    height: int
    def __init__(self, iteration: _Optional[int] = ..., total_iterations: _Optional[int] = ..., losses: _Optional[_Union[Losses, _Mapping]] = ..., elapsed_seconds: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., stage: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("iteration", "image")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    image: Image
    def __init__(self, iteration: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("seed", "backbone", "weights_sha256", "device", "precision", "server_version", "torch_version", "request_id", "precision_choice", "feed_forward")
    SEED_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRECISION_CHOICE_FIELD_NUMBER: _ClassVar[int]
    FEED_FORWARD_FIELD_NUMBER: _ClassVar[int]
    seed: int
    backbone: str
    weights_sha256: str
    device: str
    precision: str
    server_version: str
    torch_version: str
    request_id: str
    precision_choice: PrecisionChoice
    feed_forward: FeedForwardInfo
    def __init__(self, seed: _Optional[int] = ..., backbone: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., server_version: _Optional[str] = ..., torch_version: _Optional[str] = ..., request_id: _Optional[str] = ..., precision_choice: _Optional[_Union[PrecisionChoice, _Mapping]] = ..., feed_forward: _Optional[_Union[FeedForwardInfo, _Mapping]] = ...) -> None: ...

class PrecisionTrial(_message.Message):
    __slots__ = ("precision", "seconds", "deviation")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVIATION_FIELD_NUMBER: _ClassVar[int]
    precision: str
    seconds: float
    deviation: float
    def __init__(self, precision: _Optional[str] = ..., seconds: _Optional[float] = ..., deviation: _Optional[float] = ...) -> None: ...

class PrecisionChoice(_message.Message):
    __slots__ = ("precision", "reason", "trials")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    precision: str
    reason: str
    trials: _containers.RepeatedCompositeFieldContainer[PrecisionTrial]
    def __init__(self, precision: _Optional[str] = ..., reason: _Optional[str] = ..., trials: _Optional[_Iterable[_Union[PrecisionTrial, _Mapping]]] = ...) -> None: ...

class FeedForwardInfo(_message.Message):
    __slots__ = ("name", "sha256", "execution_provider")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    execution_provider: str
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., execution_provider: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_seconds", "setup_seconds", "optimize_seconds", "total_seconds")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SETUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    setup_seconds: float
    optimize_seconds: float
    total_seconds: float
    def __init__(self, queue_seconds: _Optional[float] = ..., setup_seconds: _Optional[float] = ..., optimize_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("image", "width", "height", "losses", "timings", "effective_options", "receipt", "iterations", "partial", "stop_reason", "image_sha256", "image_size_bytes")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    image: Image
    width: int
    height: int
    losses: Losses
    timings: Timings
    effective_options: StyleOptions
    receipt: Receipt
    iterations: int
    partial: bool
    stop_reason: StopReason
    image_sha256: str
    image_size_bytes: int
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., losses: _Optional[_Union[Losses, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., effective_options: _Optional[_Union[StyleOptions, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., iterations: _Optional[int] = ..., partial: _Optional[bool] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ..., image_sha256: _Optional[str] = ..., image_size_bytes: _Optional[int] = ...) -> None: ...

class ImageChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StyleTransferResponse(_message.Message):
    __slots__ = ("queued", "started", "progress", "preview", "result", "result_chunk", "sequence")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    queued: Queued
    started: Started
    progress: Progress
    preview: Preview
    result: Result
    result_chunk: ImageChunk
    sequence: int
    def __init__(self, queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., result_chunk: _Optional[_Union[ImageChunk, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: StyleTransferResponse
    def __init__(self, event: _Optional[_Union[StyleTransferResponse, _Mapping]] = ...) -> None: ...

class StylizeVideoRequest(_message.Message):
    __slots__ = ("start", "frame")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    start: VideoStart
    frame: VideoFrame
    def __init__(self, start: _Optional[_Union[VideoStart, _Mapping]] = ..., frame: _Optional[_Union[VideoFrame, _Mapping]] = ...) -> None: ...

class VideoStart(_message.Message):
    __slots__ = ("job", "frame_count", "frames_per_second")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    job: StyleTransferRequest
    frame_count: int
    frames_per_second: float
    def __init__(self, job: _Optional[_Union[StyleTransferRequest, _Mapping]] = ..., frame_count: _Optional[int] = ..., frames_per_second: _Optional[float] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: Image
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class StylizeVideoResponse(_message.Message):
    __slots__ = ("queued", "started", "progress", "frame", "result")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    queued: Queued
    started: Started
    progress: VideoProgress
    frame: VideoFrameResult
    result: VideoResult
    def __init__(self, queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[VideoProgress, _Mapping]] = ..., frame: _Optional[_Union[VideoFrameResult, _Mapping]] = ..., result: _Optional[_Union[VideoResult, _Mapping]] = ...) -> None: ...

class VideoProgress(_message.Message):
    __slots__ = ("frames_done", "frame_count", "iteration", "total_iterations", "elapsed_seconds", "eta_seconds")
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    frames_done: int
    frame_count: int
    iteration: int
    total_iterations: int
    elapsed_seconds: float
    eta_seconds: float
    def __init__(self, frames_done: _Optional[int] = ..., frame_count: _Optional[int] = ..., iteration: _Optional[int] = ..., total_iterations: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class VideoFrameResult(_message.Message):
    __slots__ = ("index", "image", "losses", "consistent_fraction")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: Image
    losses: Losses
    consistent_fraction: float
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., losses: _Optional[_Union[Losses, _Mapping]] = ..., consistent_fraction: _Optional[float] = ...) -> None: ...

class VideoResult(_message.Message):
    __slots__ = ("frames", "width", "height", "timings", "effective_options", "receipt")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    frames: int
    width: int
    height: int
    timings: Timings
    effective_options: StyleOptions
    receipt: Receipt
    def __init__(self, frames: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., effective_options: _Optional[_Union[StyleOptions, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_request_bytes", "max_image_bytes", "max_input_pixels", "max_output_side", "max_iterations", "max_styles", "job_slots", "queue_size", "max_evals_per_iteration", "max_preview_size", "min_output_side", "max_scales", "max_layers", "max_name_length", "memory_budget_bytes", "max_video_frames", "max_video_fps", "max_frames_in_flight", "stream_idle_seconds", "feed_forward_slots", "feed_forward_queue_size")
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_STYLES_FIELD_NUMBER: _ClassVar[int]
    JOB_SLOTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_EVALS_PER_ITERATION_FIELD_NUMBER: _ClassVar[int]
    MAX_PREVIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_OUTPUT_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALES_FIELD_NUMBER: _ClassVar[int]
    MAX_LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_NAME_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VIDEO_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_VIDEO_FPS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    STREAM_IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FEED_FORWARD_SLOTS_FIELD_NUMBER: _ClassVar[int]
    FEED_FORWARD_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    max_request_bytes: int
    max_image_bytes: int
    max_input_pixels: int
    max_output_side: int
    max_iterations: int
    max_styles: int
    job_slots: int
    queue_size: int
    max_evals_per_iteration: int
    max_preview_size: int
    min_output_side: int
    max_scales: int
    max_layers: int
    max_name_length: int
    memory_budget_bytes: int
    max_video_frames: int
    max_video_fps: int
    max_frames_in_flight: int
    stream_idle_seconds: int
    feed_forward_slots: int
    feed_forward_queue_size: int
    def __init__(self, max_request_bytes: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_input_pixels: _Optional[int] = ..., max_output_side: _Optional[int] = ..., max_iterations: _Optional[int] = ..., max_styles: _Optional[int] = ..., job_slots: _Optional[int] = ..., queue_size: _Optional[int] = ..., max_evals_per_iteration: _Optional[int] = ..., max_preview_size: _Optional[int] = ..., min_output_side: _Optional[int] = ..., max_scales: _Optional[int] = ..., max_layers: _Optional[int] = ..., max_name_length: _Optional[int] = ..., memory_budget_bytes: _Optional[int] = ..., max_video_frames: _Optional[int] = ..., max_video_fps: _Optional[int] = ..., max_frames_in_flight: _Optional[int] = ..., stream_idle_seconds: _Optional[int] = ..., feed_forward_slots: _Optional[int] = ..., feed_forward_queue_size: _Optional[int] = ...) -> None: ...

class Preset(_message.Message):
    __slots__ = ("name", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    options: StyleOptions
    def __init__(self, name: _Optional[str] = ..., options: _Optional[_Union[StyleOptions, _Mapping]] = ...) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "backbones", "presets", "device", "limits", "default_delivery", "torch_version", "feed_forward", "precision_choice", "style_cache", "uploads", "jobs")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKBONES_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEED_FORWARD_FIELD_NUMBER: _ClassVar[int]
    PRECISION_CHOICE_FIELD_NUMBER: _ClassVar[int]
    STYLE_CACHE_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    version: str
    backbones: _containers.RepeatedScalarFieldContainer[str]
    presets: _containers.RepeatedCompositeFieldContainer[Preset]
    device: str
    limits: Limits
    default_delivery: DeliveryOptions
    torch_version: str
    feed_forward: FeedForwardInfo
    precision_choice: PrecisionChoice
    style_cache: StyleCacheInfo
    uploads: UploadStoreInfo
    jobs: JobStoreInfo
    def __init__(self, version: _Optional[str] = ..., backbones: _Optional[_Iterable[str]] = ..., presets: _Optional[_Iterable[_Union[Preset, _Mapping]]] = ..., device: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., default_delivery: _Optional[_Union[DeliveryOptions, _Mapping]] = ..., torch_version: _Optional[str] = ..., feed_forward: _Optional[_Union[FeedForwardInfo, _Mapping]] = ..., precision_choice: _Optional[_Union[PrecisionChoice, _Mapping]] = ..., style_cache: _Optional[_Union[StyleCacheInfo, _Mapping]] = ..., uploads: _Optional[_Union[UploadStoreInfo, _Mapping]] = ..., jobs: _Optional[_Union[JobStoreInfo, _Mapping]] = ...) -> None: ...

class JobStoreInfo(_message.Message):
    __slots__ = ("detach_grace_seconds", "retention_seconds", "max_bytes", "used_bytes")
    DETACH_GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    detach_grace_seconds: int
    retention_seconds: int
    max_bytes: int
    used_bytes: int
    def __init__(self, detach_grace_seconds: _Optional[int] = ..., retention_seconds: _Optional[int] = ..., max_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class StyleCacheInfo(_message.Message):
    __slots__ = ("max_bytes", "used_bytes", "entries")
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    used_bytes: int
    entries: int
    def __init__(self, max_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., entries: _Optional[int] = ...) -> None: ...

class UploadPictureRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("sha256", "size_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadPictureResponse(_message.Message):
    __slots__ = ("upload_id", "size_bytes", "expire_seconds")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    size_bytes: int
    expire_seconds: int
    def __init__(self, upload_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., expire_seconds: _Optional[int] = ...) -> None: ...

class UploadStoreInfo(_message.Message):
    __slots__ = ("max_bytes", "used_bytes", "expire_seconds", "max_upload_bytes")
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    used_bytes: int
    expire_seconds: int
    max_upload_bytes: int
    def __init__(self, max_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., expire_seconds: _Optional[int] = ..., max_upload_bytes: _Optional[int] = ...) -> None: ...
