"""`AdapterFusionConfig`: how an AdapterFusion attends over its adapters."""

import dataclasses

BOOLEAN_FIELDS = ("key", "query", "value", "query_before_ln", "regularization",
                  "residual_before", "temperature", "value_before_softmax", "value_initialized")


@dataclasses.dataclass(frozen=True)
class AdapterFusionConfig:
    """The settings of one AdapterFusion, under AdapterHub's field names.

    Pfeiffer et al., "AdapterFusion" (EACL 2021), §3.2; the fields and
    defaults are `adapters` 1.3.0's `AdapterFusionConfig`, and the default is
    its `"dynamic"` configuration. `AdapterFusion` (keras_adapters.layers)
    gives the equations.

    Attributes:
        key, query, value: bool, whether the key, query and value
            projections exist (each hidden x hidden; the value has no bias).
            Default True.
        query_before_ln: bool. The query is the sub-layer's output h (True)
            or the state the fused adapters read, e.g. LN(h + x) for
            `seq_bn` adapters (False, the default).
        regularization: bool. Add `0.01 * sum((I - W_v)^2)` to the training
            loss while `W_v` trains. Defaults to True. (AdapterHub 1.3.0
            ignores this flag and always adds it, a step late.)
        residual_before: bool. Add the residual to each adapter's output
            before the attention instead of to its result. Defaults to False.
        temperature: bool. Must be False: AdapterHub's annealed softmax
            temperature changes with every forward call, so its outputs
            depend on how often the model was called.
        value_before_softmax: bool. Apply `W_v` to each adapter's output
            (True, the default) or to their weighted sum.
        value_initialized: bool. Start `W_v` at the identity (1e-6 elsewhere).
            Defaults to True.
        dropout_prob: float in [0, 1) or None, dropout on the attention
            scores in training. None (the default) takes the backbone's
            dropout rate, as AdapterHub takes `attention_probs_dropout_prob`.

    Raises:
        ValueError: naming the field, for a non-bool flag, `temperature=True`,
            no projection at all, or `dropout_prob` outside [0, 1).

    Example:

    ```python
    AdapterFusionConfig.load("static")  # value=False, regularization=False...
    AdapterFusionConfig(dropout_prob=0.0)
    ```
    """

    key: bool = True
    query: bool = True
    value: bool = True
    query_before_ln: bool = False
    regularization: bool = True
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: bool = True
    dropout_prob: float | None = None

    def __post_init__(self):
        for field in BOOLEAN_FIELDS:
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field} must be True or False; got {getattr(self, field)!r}.")
        if self.temperature:
            raise ValueError("temperature=True is not supported: AdapterHub anneals the "
                             "temperature on every forward call, inference included.")
        if not (self.query or self.key or self.value):
            raise ValueError("An AdapterFusion needs at least one of query, key and value.")
        if self.dropout_prob is not None and not 0 <= self.dropout_prob < 1:
            raise ValueError(f"dropout_prob must be None or in [0, 1); got {self.dropout_prob!r}.")

    @classmethod
    def load(cls, config):
        """An `AdapterFusionConfig` from itself, a dict of fields, or a preset name.

        Raises:
            ValueError: for an unknown preset name or field.
        """
        if isinstance(config, cls):
            return config
        if isinstance(config, str):
            if config not in FUSION_PRESETS:
                raise ValueError(f"Unknown AdapterFusion config {config!r}; expected a dict "
                                 f"or one of {sorted(FUSION_PRESETS)}.")
            return FUSION_PRESETS[config]
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown AdapterFusionConfig fields {unknown}.")
        return cls(**config)

    def to_dict(self):
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def layer_kwargs(self, dropout):
        """`AdapterFusion` arguments, `dropout` being the backbone's rate."""
        return {"query": self.query, "key": self.key, "value": self.value,
                "value_before_softmax": self.value_before_softmax,
                "value_initialized": self.value_initialized,
                "residual_before": self.residual_before, "regularization": self.regularization,
                "dropout": dropout if self.dropout_prob is None else self.dropout_prob}


# AdapterHub's named configurations (`adapters.configuration.adapter_fusion_config`).
FUSION_PRESETS = {
    "dynamic": AdapterFusionConfig(),
    "static": AdapterFusionConfig(value=False, regularization=False, value_initialized=False),
}
