"""`AdapterConfig`: where adapters go, how big they are, and what trains."""

import dataclasses
import json

PLACEMENTS = ("houlsby", "pfeiffer")
# AdapterHub's configuration names: (our placement, original_ln_before).
PLACEMENT_ALIASES = {"double_seq_bn": ("houlsby", False), "seq_bn": ("pfeiffer", True)}
# AdapterHub's names whose dataflow differs from every placement here.
NOT_YET = {
    "par_bn": "the parallel adapter (He et al., 2022) is not built yet",
}
DEFAULT_ADAPTER_SIZE = 64


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """The settings of one set of bottleneck adapters on a transformer.

    Attributes:
        adapter_size: int or None. The bottleneck size m (Houlsby et al., 2019,
            §2.1). Give at most one of `adapter_size` and `reduction_factor`;
            with neither, `adapter_size` is 64.
        reduction_factor: int or None. The ratio hidden_dim/m (the AdapterHub
            convention). Defaults to None.
        activation: str. The adapter nonlinearity, any Keras activation name.
            Defaults to `"gelu"`.
        initializer_std: float. Std of the truncated normal (cut at 2 std) that
            draws the adapter kernels; biases start at zero. Defaults to 1e-2.
        placement: `"houlsby"` puts an adapter after the attention output and
            one after the feed-forward output of every layer (Houlsby et al.,
            Fig. 2); `"pfeiffer"` only after the feed-forward output (Pfeiffer
            et al., 2021, "AdapterFusion", §3). AdapterHub's `"double_seq_bn"`
            is accepted for `"houlsby"`, and its `"seq_bn"` for `"pfeiffer"`
            with `original_ln_before=True`. Defaults to `"houlsby"`.
        train_layer_norms: bool. Whether the layer norms train with the
            adapters, as in Houlsby §2.1. Defaults to True.
        leave_out: tuple of int. Transformer layer indices (0 is the lowest)
            that get no adapter at all. Defaults to `()`.
        original_ln_before: bool, AdapterHub's field. False: the adapter reads
            the sub-layer's output h and adds its own skip, `LN(h + A(h) + x)`
            with x the sub-layer's input (Houlsby et al., Fig. 2). True: it
            reads `u = LN(h + x)`, the layer norm applied once more after it,
            `LN(h + x + up(act(down(u))))` (AdapterHub's `seq_bn`, Pfeiffer et
            al.'s adapter). Defaults to False.

    Raises:
        ValueError: on a bad size, both sizes given, an unknown placement
            (naming it; AdapterHub's `par_bn` is not built yet)
            or a negative layer index in `leave_out`.

    Example:

    ```python
    config = keras_adapters.AdapterConfig(reduction_factor=16, placement="pfeiffer")
    backbone = keras_adapters.add_adapters(backbone, config, name="sst2")
    ```
    """

    adapter_size: int | None = None
    reduction_factor: int | None = None
    activation: str = "gelu"
    initializer_std: float = 1e-2
    placement: str = "houlsby"
    train_layer_norms: bool = True
    leave_out: tuple = ()
    original_ln_before: bool = False

    def __post_init__(self):
        if self.adapter_size is not None and self.reduction_factor is not None:
            raise ValueError(
                "Set at most one of adapter_size and reduction_factor; got "
                f"adapter_size={self.adapter_size}, "
                f"reduction_factor={self.reduction_factor}."
            )
        if self.adapter_size is None and self.reduction_factor is None:
            object.__setattr__(self, "adapter_size", DEFAULT_ADAPTER_SIZE)
        for field in ("adapter_size", "reduction_factor"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{field} must be a positive integer; got {value!r}.")
        if self.placement in NOT_YET:
            raise ValueError(f"placement {self.placement!r}: {NOT_YET[self.placement]}.")
        if self.placement in PLACEMENT_ALIASES:
            placement, original_ln_before = PLACEMENT_ALIASES[self.placement]
            object.__setattr__(self, "placement", placement)
            object.__setattr__(self, "original_ln_before",
                               self.original_ln_before or original_ln_before)
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"placement must be one of {PLACEMENTS} (or {sorted(PLACEMENT_ALIASES)}); "
                f"got {self.placement!r}."
            )
        if self.initializer_std < 0:
            raise ValueError(
                f"initializer_std must be >= 0; got {self.initializer_std}."
            )
        leave_out = tuple(int(i) for i in self.leave_out)
        if any(i < 0 for i in leave_out):
            raise ValueError(f"leave_out holds a negative layer index: {leave_out}.")
        object.__setattr__(self, "leave_out", tuple(sorted(set(leave_out))))

    def adapter_kwargs(self):
        """The `BottleneckAdapter` constructor arguments of this config."""
        return {
            "adapter_size": self.adapter_size,
            "reduction_factor": self.reduction_factor,
            "activation": self.activation,
            "initializer_std": self.initializer_std,
        }

    def to_dict(self):
        """A JSON-ready dict of every field."""
        config = dataclasses.asdict(self)
        config["leave_out"] = list(self.leave_out)
        return config

    @classmethod
    def from_dict(cls, config):
        """Inverse of `to_dict`. Raises TypeError on an unknown field."""
        return cls(**config)

    def to_json(self):
        """The config as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Inverse of `to_json`."""
        return cls.from_dict(json.loads(text))
