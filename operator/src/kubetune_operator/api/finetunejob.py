"""FineTuneJob: SFT, DPO, ORPO, SimPO or KTO, LoRA or full, on one GPU or many 8-GPU nodes, resumable."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kubetune_operator.api.pod import PodOptions
from kubetune_operator.api.resource import (
    GpuResourceName,
    ImageRef,
    Model,
    ModelUri,
    ObjectMeta,
    Quantity,
    Regex,
    Resource,
    ResourceName,
    Scheduling,
    StatusBase,
    Storage,
    Uri,
    cel,
    immutable_fields,
)

Fingerprint = Annotated[str, Field(max_length=80, pattern=r"^sha256:[0-9a-f]{64}$")]
TargetModule = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class DatasetRef(Model):
    """The training data: a PreferenceDataset in this namespace, or a prepared dataset URI."""

    cel_rules: ClassVar = [
        cel("has(self.preferenceDataset) != has(self.uri)", "set exactly one of preferenceDataset or uri")
    ]

    preference_dataset: ResourceName | None = None
    """Name of a PreferenceDataset in this namespace; the job waits until it has succeeded."""

    uri: Uri | None = None
    """URI of a prepared dataset directory (train.jsonl, test.jsonl, manifest.json)."""

    fingerprint: Fingerprint | None = None
    """Expected dataset fingerprint; training refuses other data. Filled from the PreferenceDataset when
    that is used."""


class StartFrom(Model):
    """A previous adapter to merge into the base before training: the SFT step of an SFT→DPO chain."""

    cel_rules: ClassVar = [
        cel("has(self.fineTuneJob) != has(self.adapterUri)", "set exactly one of fineTuneJob or adapterUri")
    ]

    fine_tune_job: ResourceName | None = None
    """Name of a FineTuneJob in this namespace; the job waits until it has succeeded and starts from its
    adapter. The adapter's true base is recorded, so evaluation cannot load it onto the wrong model."""

    adapter_uri: Uri | None = None
    """URI of an adapter directory written by kubetune (final/ of another job's output)."""


class Lora(Model):
    """LoRA settings."""

    r: Annotated[int, Field(ge=1, le=1024)] = 16
    """Rank of the update matrices."""

    alpha: Annotated[int, Field(ge=1, le=4096)] = 32
    """Scaling numerator (the update is scaled by alpha / r)."""

    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    """Dropout on the LoRA input."""

    target_modules: Annotated[list[TargetModule], Field(min_length=1, max_length=32)] = ["all-linear"]
    """Modules to adapt: names such as q_proj, v_proj, or all-linear."""


class Peft(Model):
    """Parameter-efficient fine-tuning, or full fine-tuning."""

    cel_rules: ClassVar = [
        cel("self.type != 'full' || !has(self.lora)", "peft.lora does not apply to type full", field_path=".lora")
    ]

    type: Literal["lora", "qlora", "full"] = "lora"
    """lora: train adapters on a frozen base; qlora: the same on a 4-bit base (GPU only); full: all weights."""

    lora: Lora | None = None
    """LoRA settings (for lora and qlora); defaults apply when omitted."""


class Hyperparameters(Model):
    """Optimization settings. Effective batch = batchSize × gradientAccumulationSteps × nodes × gpusPerNode."""

    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-4
    """Peak learning rate."""

    epochs: Annotated[float, Field(gt=0.0, le=1000.0)] = 1.0
    """Passes over the training split (fractions allowed)."""

    max_steps: Annotated[int, Field(ge=-1, le=10_000_000)] = -1
    """Stop after this many optimizer steps; -1 runs the full epochs."""

    batch_size: Annotated[int, Field(ge=1, le=4096)] = 1
    """Examples per GPU (or per process on CPU) per micro-step."""

    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=4096)] = 8
    """Micro-steps per optimizer step."""

    cutoff_length: Annotated[int, Field(ge=16, le=1_048_576)] = 1024
    """Maximum tokens of prompt plus answer; longer examples are truncated from the prompt's start."""

    warmup_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Fraction of steps spent warming up the learning rate (below 1: some steps must train at the peak)."""

    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """AdamW weight decay."""

    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule."""

    max_grad_norm: Annotated[float, Field(gt=0.0, le=1000.0)] = 1.0
    """Gradient clipping norm."""

    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42
    """Seed for weights of new layers, data order and dropout."""

    deterministic: bool = False
    """Deterministic kernels only (transformers' full_determinism): a rerun with the same seed on the same
    hardware gives the same weights. Costs speed on GPUs; kernels with no deterministic version fail."""

    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 where the GPU supports it, else fp32."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% more compute."""


class KeyTokens(Model):
    """Extra loss weight on tokens that matter (the seed-001 workflow weights its judgement tokens)."""

    patterns: Annotated[list[Annotated[Regex, Field(max_length=256)]], Field(min_length=1, max_length=32)]
    """Regular expressions; answer tokens inside a match get the weight."""

    weight: Annotated[float, Field(gt=0.0, le=100.0)] = 2.0
    """Loss weight of matching tokens (others weigh 1)."""


class Sft(Model):
    """Supervised fine-tuning options."""

    completion_only_loss: bool = True
    """Compute the loss on assistant tokens only."""

    packing: bool = False
    """Pack several short examples into one sequence."""

    key_tokens: KeyTokens | None = None
    """Weighted loss on key tokens."""


DpoLoss = Literal[
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "sigmoid_norm",
]


class Dpo(Model):
    """Direct Preference Optimization options."""

    cel_rules: ClassVar = [
        cel(
            "!has(self.labelSmoothing) || self.labelSmoothing == 0.0 || "
            "self.lossType in ['sigmoid', 'robust', 'exo_pair', 'aot', 'aot_unpaired']",
            "labelSmoothing applies to lossType sigmoid, robust, exo_pair, aot and aot_unpaired",
            field_path=".labelSmoothing",
        ),
        cel(
            "self.lossType != 'exo_pair' || (has(self.labelSmoothing) && self.labelSmoothing > 0.0)",
            "lossType exo_pair needs labelSmoothing above 0 (the EXO paper uses 0.001)",
            field_path=".labelSmoothing",
        ),
    ]

    beta: Annotated[float, Field(gt=0.0, le=100.0)] = 0.1
    """Strength of the KL penalty towards the reference model."""

    loss_type: DpoLoss = "sigmoid"
    """A loss of TRL's DPO family: sigmoid (the DPO paper), ipo, hinge, robust (noisy labels, with
    labelSmoothing), exo_pair (EXO, with labelSmoothing), nca_pair, bco_pair, sppo_hard (SPPO with hard
    labels), aot, aot_unpaired, apo_zero, apo_down (anchored: raise chosen and lower rejected, or lower
    both), sigmoid_norm."""

    label_smoothing: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0
    """Probability that a preference label is flipped (robust, conservative sigmoid) or EXO's epsilon."""

    sft_loss_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    """Weight of an extra negative log-likelihood loss on the chosen answers (RPO). A little keeps DPO from
    lowering the chosen answers' likelihood along with the rejected ones."""

    precompute_ref_log_probs: bool = False
    """Compute the reference model's log-probs once before training (saves memory during training)."""

    padding_free: bool = False
    """Concatenate sequences without padding where the attention kernel supports it."""


class Orpo(Model):
    """Odds Ratio Preference Optimization: SFT on the chosen answers plus an odds-ratio penalty, with no
    reference model (one forward pass per pair instead of DPO's two)."""

    beta: Annotated[float, Field(gt=0.0, le=100.0)] = 0.1
    """Weight of the odds-ratio term against the chosen answers' NLL (the paper's lambda)."""


class Simpo(Model):
    """Simple Preference Optimization: length-normalised log-likelihood as the reward, a target margin,
    no reference model."""

    beta: Annotated[float, Field(gt=0.0, le=100.0)] = 2.0
    """Scale of the reward (the paper uses 2.0 to 2.5)."""

    gamma: Annotated[float, Field(ge=0.0, le=100.0)] = 0.5
    """Target margin by which the chosen answer's reward should beat the rejected one's."""

    sft_loss_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    """Weight of an added NLL loss on the chosen answers (CPO-SimPO); 0 is plain SimPO."""


class Kto(Model):
    """Kahneman-Tversky Optimization on unpaired answers labelled desirable or undesirable (a
    PreferenceDataset of kind kto), against a reference model as DPO."""

    beta: Annotated[float, Field(gt=0.0, le=100.0)] = 0.1
    """Strength of the KL penalty towards the reference model."""

    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    """kto (the paper) or apo_zero_unpaired (anchored: raise desirable answers, lower undesirable ones)."""

    desirable_weight: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    """Weight of the desirable answers' loss; raise it when they are fewer than the undesirable ones."""

    undesirable_weight: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    """Weight of the undesirable answers' loss."""

    precompute_ref_log_probs: bool = False
    """Compute the reference model's log-probs once before training."""


class DeepSpeed(Model):
    """DeepSpeed ZeRO settings; the config is generated from these."""

    cel_rules: ClassVar = [
        cel("!self.offloadParams || self.stage == 3", "offloadParams needs stage 3", field_path=".offloadParams"),
        cel(
            "!self.offloadOptimizer || self.stage >= 2",
            "offloadOptimizer needs stage 2 or 3",
            field_path=".offloadOptimizer",
        ),
    ]

    stage: Literal[0, 2, 3] = 3
    """ZeRO stage: 0 (plain data parallel), 2 (shard optimizer and gradients) or 3 (also parameters)."""

    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory."""

    offload_params: bool = False
    """Keep parameters in CPU memory (stage 3)."""


class Resources(Model):
    """Compute for the training pods."""

    nodes: Annotated[int, Field(ge=1, le=128)] = 1
    """Pods (one per node), started together by torchrun."""

    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 8
    """GPUs per pod; 0 trains on CPU."""

    gpu_resource_name: GpuResourceName = "nvidia.com/gpu"
    """Extended resource name of the GPUs."""

    cpu: Quantity = "16"
    """CPU request and limit per pod."""

    memory: Quantity = "128Gi"
    """Memory request and limit per pod."""

    shared_memory: Quantity = "16Gi"
    """Size of /dev/shm (NCCL and data loaders need more than the container default)."""

    ephemeral_storage: Quantity | None = None
    """Scratch space per pod (downloaded models, merged bases, checkpoints before upload): the pod requests this
    much ephemeral-storage (request and limit) and its /scratch volume is capped at it. Default: no request
    (the node's free disk)."""

    image: ImageRef | None = None
    """Trainer image override. Default: the image the operator is configured with."""

    deepspeed: DeepSpeed | None = None
    """ZeRO settings; default stage 3 when more than one GPU trains, none otherwise."""


class Checkpointing(Model):
    """Checkpoints, written to <output>/checkpoints with a completion marker."""

    every_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Save every N optimizer steps (and on SIGTERM)."""

    keep: Annotated[int, Field(ge=1, le=100)] = 3
    """Complete checkpoints to keep (the best by eval loss is kept besides)."""


TrackingName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")]


class Tracking(Model):
    """Experiment tracking through transformers' report_to integrations. Tracking servers and their
    credentials come from a Secret (secretName) whose keys the pods get by secretKeyRef, never from this
    spec: MLFLOW_TRACKING_URI (required for mlflow), MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD,
    MLFLOW_TRACKING_TOKEN; WANDB_API_KEY (required for wandb), WANDB_BASE_URL, WANDB_ENTITY, WANDB_MODE.
    TensorBoard needs none: its event files go to <output>/tensorboard/."""

    cel_rules: ClassVar = [
        cel(
            "self.reportTo.all(t, self.reportTo.filter(u, u == t).size() == 1)",
            "reportTo names a tracker twice",
            field_path=".reportTo",
        ),
        cel(
            "!('mlflow' in self.reportTo || 'wandb' in self.reportTo) || has(self.secretName)",
            "mlflow and wandb need secretName: the Secret with the tracking server and its credentials",
            field_path=".secretName",
        ),
    ]

    report_to: Annotated[list[Literal["mlflow", "tensorboard", "wandb"]], Field(min_length=1, max_length=3)]
    """Where the training metrics go: mlflow, tensorboard, wandb (any of them)."""

    project: TrackingName | None = None
    """MLflow experiment or W&B project. Default: the tracker's own (MLflow's Default experiment)."""

    run_name: TrackingName | None = None
    """Name of the tracker's run. Default: the FineTuneJob's name."""

    secret_name: ResourceName | None = None
    """Secret in this namespace with the tracking server's address and credentials (keys above)."""


class Output(Model):
    """Where results go."""

    uri: Uri | None = None
    """Artifact directory. Default: <artifact root>/<namespace>/<plural>/<name>/."""

    merge_adapter: bool = False
    """Also write the adapter merged into its base as a full model (merged/)."""


class FineTuneJobSpec(Model):
    """Desired state of a FineTuneJob."""

    cel_rules: ClassVar = [
        cel("self.method == 'dpo' || !has(self.dpo)", "dpo options need method dpo", field_path=".dpo"),
        cel("self.method == 'sft' || !has(self.sft)", "sft options need method sft", field_path=".sft"),
        cel("self.method == 'orpo' || !has(self.orpo)", "orpo options need method orpo", field_path=".orpo"),
        cel("self.method == 'simpo' || !has(self.simpo)", "simpo options need method simpo", field_path=".simpo"),
        cel("self.method == 'kto' || !has(self.kto)", "kto options need method kto", field_path=".kto"),
        cel(
            "self.method != 'kto' || (has(self.kto) && self.kto.lossType == 'apo_zero_unpaired') || "
            "self.hyperparameters.batchSize >= 2",
            "kto needs hyperparameters.batchSize 2 or more: its KL term pairs the answers of a batch",
            field_path=".hyperparameters.batchSize",
        ),
        cel(
            "self.peft.type != 'qlora' || self.resources.gpusPerNode > 0",
            "qlora needs GPUs (resources.gpusPerNode > 0)",
            field_path=".peft.type",
        ),
        cel(
            "!has(self.resources.deepspeed) || self.resources.deepspeed.stage == 0 || self.resources.gpusPerNode > 0",
            "DeepSpeed ZeRO needs GPUs (resources.gpusPerNode > 0)",
            field_path=".resources.deepspeed",
        ),
        cel(
            "self.resources.nodes == 1 || self.resources.gpusPerNode > 0",
            "several nodes need GPUs (resources.gpusPerNode > 0)",
            field_path=".resources.nodes",
        ),
        cel(
            "self.peft.type != 'qlora' || (has(self.resources.deepspeed) ? self.resources.deepspeed.stage != 3"
            " : self.resources.nodes * self.resources.gpusPerNode <= 1)",
            "qlora does not shard under DeepSpeed ZeRO-3, the default when more than one GPU trains: "
            "set resources.deepspeed.stage to 0 or 2",
            field_path=".peft.type",
        ),
        cel(
            "self.peft.type != 'full' || !self.output.mergeAdapter",
            "output.mergeAdapter merges an adapter into its base: a full fine-tune is already a whole model",
            field_path=".output.mergeAdapter",
        ),
        cel(
            "!has(self.startFrom) || self.peft.type != 'full'",
            "startFrom merges an adapter and trains a new one: it needs peft type lora or qlora",
            field_path=".startFrom",
        ),
    ]

    method: Literal["sft", "dpo", "orpo", "simpo", "kto"]
    """Training method: sft; dpo (its lossType picks among TRL's DPO family); orpo and simpo, which need
    no reference model; kto, on a dataset of kind kto. dpo, orpo and simpo train on preference pairs.
    Method options live in the block of the same name."""

    base_model: ModelUri
    """The model to fine-tune: a directory in s3:// or file://, or hf://org/name where pods may reach the
    Hugging Face Hub."""

    start_from: StartFrom | None = None
    """An adapter to merge into the base first (SFT→DPO chains)."""

    dataset: DatasetRef
    """Training data."""

    peft: Peft = Peft()
    """LoRA, QLoRA or full fine-tuning."""

    hyperparameters: Hyperparameters = Hyperparameters()
    """Optimization settings."""

    sft: Sft | None = None
    """SFT options (method sft)."""

    dpo: Dpo | None = None
    """DPO options (method dpo)."""

    orpo: Orpo | None = None
    """ORPO options (method orpo)."""

    simpo: Simpo | None = None
    """SimPO options (method simpo)."""

    kto: Kto | None = None
    """KTO options (method kto)."""

    resources: Resources = Resources()
    """Nodes, GPUs, memory, image, DeepSpeed."""

    scheduling: Scheduling = Scheduling()
    """Node selection and tolerations for the training pods."""

    pod: PodOptions = PodOptions()
    """Environment (values, Secrets, ConfigMaps), extra volumes and mounts, and a shared model cache for the pods."""

    checkpointing: Checkpointing = Checkpointing()
    """Checkpoint cadence and retention."""

    output: Output = Output()
    """Where the adapter or model goes."""

    tracking: Tracking | None = None
    """Experiment tracking (MLflow, TensorBoard, W&B). Loss, learning-rate and reward-margin curves are
    plotted into <output>/plots/ either way."""

    storage: Storage = Storage()
    """Credentials for S3."""

    queue_name: ResourceName | None = None
    """Kueue LocalQueue: the Job is created suspended with the kueue.x-k8s.io/queue-name label and Kueue
    admits it."""

    suspend: bool = False
    """Suspend the training Job (its pods are deleted; resuming restarts from the last checkpoint)."""

    active_deadline_seconds: Annotated[int, Field(ge=60, le=60 * 86400)] | None = None
    """Wall-clock limit of the training Job."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Pod failures tolerated before the job fails. Preemptions (DisruptionTarget) do not count, and bad
    config or data fails at once."""


class Progress(Model):
    """Training progress, as last reported by the trainer."""

    step: int | None = None
    """Optimizer steps done."""

    total_steps: int | None = None
    """Optimizer steps planned."""

    percent: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    """Progress in percent."""

    eta_seconds: float | None = None
    """Estimated seconds to completion."""

    loss: float | None = None
    """Latest training loss."""

    eval_loss: float | None = None
    """Latest evaluation loss."""

    reward_margin: float | None = None
    """Latest reward margin of a preference method (chosen minus rejected)."""

    reward_accuracy: float | None = None
    """Latest reward accuracy of a preference method (KTO reports none)."""

    tokens_per_second: float | None = None
    """Training throughput."""

    updated_at: Annotated[str, Field(max_length=64)] | None = None
    """When the trainer last reported (RFC 3339)."""


class MergedAdapter(Model):
    """An adapter merged into the base."""

    uri: Annotated[str, Field(max_length=1024)]
    """Where the adapter is."""

    sha256: Annotated[str, Field(max_length=80)] | None = None
    """sha256 of its weights file."""


class TrueBase(Model):
    """The model an adapter was trained on: the base with the listed adapters merged in order."""

    base_model: Annotated[str, Field(max_length=1024)]
    """The original base model."""

    merged_adapters: Annotated[list[MergedAdapter], Field(max_length=16)] | None = None
    """Adapters merged into it before training, in order."""


class TrainArtifacts(Model):
    """What the job wrote."""

    uri: Annotated[str, Field(max_length=1024)] | None = None
    """The final adapter or model (final/)."""

    type: Literal["adapter", "full"] | None = None
    """adapter (LoRA weights) or full (all weights)."""

    merged_uri: Annotated[str, Field(max_length=1024)] | None = None
    """The adapter merged into its true base (merged/), when output.mergeAdapter is set."""

    manifest: Annotated[str, Field(max_length=1024)] | None = None
    """URI of manifest.json (sha256 of every file, config, versions)."""

    sha256: Annotated[dict[str, Annotated[str, Field(max_length=80)]], Field(max_length=64)] | None = None
    """sha256 of each file in final/."""

    plots: Plots | None = None
    """Loss, learning-rate and reward-margin curves."""


class Plots(Model):
    """Training curves, PNG images in the output (plots/)."""

    loss: Annotated[str, Field(max_length=1024)] | None = None
    """Train and eval loss by step."""

    learning_rate: Annotated[str, Field(max_length=1024)] | None = None
    """Learning rate by step."""

    reward_margin: Annotated[str, Field(max_length=1024)] | None = None
    """Reward margin (chosen minus rejected) by step, for preference methods."""


class TrackingStatus(Model):
    """Where the trackers recorded this training."""

    mlflow_run_id: Annotated[str, Field(max_length=128)] | None = None
    """The MLflow run."""

    mlflow_experiment_id: Annotated[str, Field(max_length=128)] | None = None
    """Its MLflow experiment."""

    wandb_run_id: Annotated[str, Field(max_length=128)] | None = None
    """The W&B run."""

    wandb_run_url: Annotated[str, Field(max_length=1024)] | None = None
    """Its page."""

    tensorboard: Annotated[str, Field(max_length=1024)] | None = None
    """The TensorBoard log directory (point `tensorboard --logdir` at it)."""


class FineTuneJobStatus(StatusBase):
    """Observed state of a FineTuneJob."""

    progress: Progress | None = None
    """Latest progress."""

    restarts: int | None = None
    """Pods replaced so far (preemptions included)."""

    last_checkpoint: Annotated[str, Field(max_length=1024)] | None = None
    """URI of the newest complete checkpoint."""

    best_checkpoint: Annotated[str, Field(max_length=1024)] | None = None
    """URI of the checkpoint with the lowest eval loss."""

    best_eval_loss: float | None = None
    """Its eval loss."""

    dataset_fingerprint: Annotated[str, Field(max_length=80)] | None = None
    """Fingerprint of the data trained on."""

    true_base: TrueBase | None = None
    """What the adapter must be loaded onto."""

    artifacts: TrainArtifacts | None = None
    """What the job wrote."""

    tracking: TrackingStatus | None = None
    """The experiment trackers' runs."""


class FineTuneJob(Resource):
    """Fine-tunes a model with SFT, DPO, ORPO, SimPO or KTO, LoRA or full, DeepSpeed ZeRO-3 across GPU nodes."""

    cel_rules: ClassVar = [
        *Resource.cel_rules,
        cel(
            "self.metadata.name.matches('^[a-z]')",
            # Service names are DNS-1035 labels: the API server refuses `7b-sft-train`.
            "metadata.name of a FineTuneJob must start with a letter: its rendezvous Service takes the name",
        ),
    ]

    kind_name: ClassVar = "FineTuneJob"
    plural: ClassVar = "finetunejobs"
    singular: ClassVar = "finetunejob"
    short_names: ClassVar = ["ftj"]
    description: ClassVar = __doc__
    printer_columns: ClassVar = [
        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "number", "jsonPath": ".status.progress.percent", "format": "float"},
        {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss", "format": "float"},
        {"name": "Margin", "type": "number", "jsonPath": ".status.progress.rewardMargin", "priority": 1},
        {"name": "ETA", "type": "number", "jsonPath": ".status.progress.etaSeconds", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    kind: Literal["FineTuneJob"] = "FineTuneJob"
    """FineTuneJob."""

    metadata: ObjectMeta
    """Standard object metadata."""

    spec: FineTuneJobSpec
    """What to train."""

    status: FineTuneJobStatus | None = None
    """How training goes."""


# suspend is the one field the operator applies to a running Job.
FineTuneJobSpec.cel_rules = [*FineTuneJobSpec.cel_rules, *immutable_fields(FineTuneJobSpec, mutable=("suspend",))]
