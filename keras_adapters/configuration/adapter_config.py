"""`AdapterConfig`: where adapters go, how big they are, and what trains."""

import dataclasses
import json

PLACEMENTS = ("houlsby", "pfeiffer")
# AdapterHub's configuration names: our placement and the fields they set.
PLACEMENT_ALIASES = {
    "double_seq_bn": ("houlsby", {}),
    "seq_bn": ("pfeiffer", {"original_ln_before": True}),
    "par_bn": ("pfeiffer", {"is_parallel": True}),
}
DEFAULT_ADAPTER_SIZE = 64
# AdapterHub's `ParBnConfig` scales the parallel adapter's output by 4 (He et al., 2022).
PARALLEL_SCALING = 4.0
RESIDUALS_BEFORE_LN = (True, False, "post_add")
SCALINGS = ("learned", "channel")
INIT_WEIGHTS = ("houlsby", "bert", "mam_adapter")


def _check_sizes(field, value):
    """`value` of `adapter_size` or `reduction_factor`: None, a positive int, or
    a dict from layer index (a string, as in JSON) or `"default"` to one."""
    sizes = value.values() if isinstance(value, dict) else [value]
    keys = value.keys() if isinstance(value, dict) else []
    bad_key = [k for k in keys if k != "default" and not (isinstance(k, str) and k.isdigit())]
    if value is not None and (bad_key or not sizes or any(
            isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in sizes)):
        raise ValueError(f"{field} must be a positive integer, or a dict from layer index "
                         f"(a string such as '0') or 'default' to one; got {value!r}.")


def _for_layer(field, value, index):
    """The entry of a per-layer `value` dict for layer `index`, else `value`."""
    if not isinstance(value, dict):
        return value
    if str(index) in value:
        return value[str(index)]
    if "default" in value:
        return value["default"]
    raise ValueError(f"{field} {value!r} has no entry for layer {index} and no 'default'.")


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """The settings of one set of bottleneck adapters on a transformer.

    The fields after `leave_out` carry AdapterHub's names (`adapters` 1.3.0,
    `BnConfig`) and change the dataflow around the adapter as it does; their
    defaults are the Houlsby paper's. In one sub-layer, with x its input, h
    its output projection after dropout, LN its layer norm and
    `A(z) = g(z) * scaling * up(act(down(z)))` (g the gate, else 1):

    - default (Houlsby, AdapterHub's `double_seq_bn`): `LN(h + A(h) + x)`;
    - `original_ln_before=True` (`seq_bn`): `z = LN(h + x)`,
      `LN(A(z) + r + x)`, the residual r being h (`residual_before_ln=True`),
      z (`False`) or `h + x` (`"post_add"`);
    - `is_parallel=True` (`par_bn`, He et al., 2022): `LN(A(x) + h + x)`;
    - `original_ln_after=False`: the last `LN(... + x)` is left out.

    Attributes:
        adapter_size: int, dict or None. The bottleneck size m (Houlsby et
            al., 2019, §2.1). A dict gives it per layer: keys are layer
            indices as strings (`"0"`) and `"default"`, AdapterHub's
            convention. Give at most one of `adapter_size` and
            `reduction_factor`; with neither, `adapter_size` is 64.
        reduction_factor: int, dict or None. The ratio hidden_dim/m (the
            AdapterHub convention; m is `hidden_dim // reduction_factor`),
            or a dict of them per layer as for `adapter_size`. Defaults to None.
        activation: str. The adapter nonlinearity, any Keras activation name
            or `"gelu_approximate"`. Defaults to `"gelu"`.
        initializer_std: float. Std of the truncated normal (cut at 2 std) that
            draws the adapter kernels under `init_weights="houlsby"`; biases
            start at zero. Defaults to 1e-2.
        placement: `"houlsby"` puts an adapter after the attention output and
            one after the feed-forward output of every layer (Houlsby et al.,
            Fig. 2); `"pfeiffer"` only after the feed-forward output (Pfeiffer
            et al., 2021, "AdapterFusion", §3). AdapterHub's names are accepted
            too: `"double_seq_bn"` for `"houlsby"`, `"seq_bn"` for
            `"pfeiffer"` with `original_ln_before=True`, and `"par_bn"` for
            `"pfeiffer"` with `is_parallel=True` (and `scaling` 4.0 unless
            given). Defaults to `"houlsby"`.
        train_layer_norms: bool. Whether the layer norms train with the
            adapters, as in Houlsby §2.1. Defaults to True.
        leave_out: tuple of int. Transformer layer indices (0 is the lowest)
            that get no adapter at all. Defaults to `()`.
        original_ln_before: bool. The adapter reads `LN(h + x)` instead of h
            (Pfeiffer et al.'s adapter). Defaults to False.
        original_ln_after: bool. The sub-layer ends with `LN(... + x)`; False
            ends it with the adapter's output. Defaults to True.
        residual_before_ln: True, False or `"post_add"`: the adapter's own
            skip connection r, as above. `"post_add"` needs
            `original_ln_before`. Defaults to True.
        adapter_residual_before_ln: bool. With `ln_after`, add r before the
            adapter's output layer norm instead of after it. Defaults to False.
        ln_before: bool. A layer norm of the adapter's own (epsilon 1e-5, as
            PyTorch's) before its down-projection. Defaults to False.
        ln_after: bool. One after its up-projection. Defaults to False.
        scaling: float, `"learned"` (one trained scalar, starting at 1) or
            `"channel"` (one per hidden unit). Multiplies `up(...)`. Defaults
            to 1.0 (4.0 with `placement="par_bn"`).
        use_gating: bool. Multiply `A(z)` by `g(z)`, the mean over the
            sequence (padding included, as AdapterHub: what a backbone
            computes at padded positions then counts) of
            `sigmoid(z W_g + b_g)`, one scalar per example. Defaults to False.
        is_parallel: bool. The adapter reads the sub-layer's input x in
            parallel with the sub-layer (He et al., 2022). Defaults to False.
        init_weights: `"houlsby"` (truncated normal, `initializer_std`),
            `"bert"` (normal, std 0.02) or `"mam_adapter"` (He et al.'s:
            PyTorch's default uniform down-projection, zero up-projection),
            as AdapterHub draws them; biases start at zero. Defaults to
            `"houlsby"`.
        dropout: float in [0, 1). Dropout on `scaling * up(...)`, in
            training only. Defaults to 0.0.

    Raises:
        ValueError: on a bad size, both sizes given, an unknown placement or
            value of `residual_before_ln`, `scaling` or `init_weights` (naming
            it), `"post_add"` without `original_ln_before`, `is_parallel` with
            `original_ln_before`, or a negative layer index in `leave_out`.

    Example:

    ```python
    config = keras_adapters.AdapterConfig(reduction_factor=16, placement="seq_bn")
    backbone = keras_adapters.add_adapters(backbone, config, name="sst2")
    ```
    """

    adapter_size: int | dict | None = None
    reduction_factor: int | dict | None = None
    activation: str = "gelu"
    initializer_std: float = 1e-2
    placement: str = "houlsby"
    train_layer_norms: bool = True
    leave_out: tuple = ()
    original_ln_before: bool = False
    original_ln_after: bool = True
    residual_before_ln: bool | str = True
    adapter_residual_before_ln: bool = False
    ln_before: bool = False
    ln_after: bool = False
    scaling: float | str | None = None
    use_gating: bool = False
    is_parallel: bool = False
    init_weights: str = "houlsby"
    dropout: float = 0.0

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
            _check_sizes(field, getattr(self, field))
        if self.placement in PLACEMENT_ALIASES:
            placement, fields = PLACEMENT_ALIASES[self.placement]
            if self.scaling is None and fields.get("is_parallel"):
                object.__setattr__(self, "scaling", PARALLEL_SCALING)
            object.__setattr__(self, "placement", placement)
            for field, value in fields.items():
                object.__setattr__(self, field, getattr(self, field) or value)
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"placement must be one of {PLACEMENTS} (or {sorted(PLACEMENT_ALIASES)}); "
                f"got {self.placement!r}."
            )
        if self.initializer_std < 0:
            raise ValueError(
                f"initializer_std must be >= 0; got {self.initializer_std}."
            )
        self._check_dataflow()
        leave_out = tuple(int(i) for i in self.leave_out)
        if any(i < 0 for i in leave_out):
            raise ValueError(f"leave_out holds a negative layer index: {leave_out}.")
        object.__setattr__(self, "leave_out", tuple(sorted(set(leave_out))))

    def _check_dataflow(self):
        """Checks (and normalises) the AdapterHub dataflow fields."""
        if self.scaling is None:
            object.__setattr__(self, "scaling", 1.0)
        if isinstance(self.scaling, (int, float)) and not isinstance(self.scaling, bool):
            object.__setattr__(self, "scaling", float(self.scaling))
        elif self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be a number or one of {SCALINGS}; "
                             f"got {self.scaling!r}.")
        if not (isinstance(self.residual_before_ln, bool) or self.residual_before_ln == "post_add"):
            raise ValueError(f"residual_before_ln must be one of {RESIDUALS_BEFORE_LN}; "
                             f"got {self.residual_before_ln!r}.")
        if self.residual_before_ln == "post_add" and not self.original_ln_before:
            raise ValueError('residual_before_ln="post_add" needs original_ln_before=True '
                             "(there is no h + x to take before the adapter otherwise).")
        if self.is_parallel and self.original_ln_before:
            raise ValueError("is_parallel and original_ln_before exclude each other: a "
                             "parallel adapter reads the sub-layer's input.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}.")
        if self.init_weights not in INIT_WEIGHTS:
            raise ValueError(f"init_weights must be one of {INIT_WEIGHTS}; "
                             f"got {self.init_weights!r}.")

    @property
    def reads_sublayer_input(self):
        """Whether the adapter's output needs the sub-layer's input x besides h:
        every configuration but the Houlsby one, `LN(h + A(h) + x)`."""
        return self.original_ln_before or self.is_parallel or not self.original_ln_after

    def for_layer(self, index):
        """This config for transformer layer `index`, or None if it is left out.

        Per-layer `adapter_size` and `reduction_factor` dicts become that
        layer's int. Raises ValueError if a dict has no entry for the layer.
        """
        if index in self.leave_out:
            return None
        return dataclasses.replace(self, **{
            field: _for_layer(field, getattr(self, field), index)
            for field in ("adapter_size", "reduction_factor")})

    def adapter_kwargs(self):
        """The `BottleneckAdapter` constructor arguments of this config (of one layer)."""
        return {field: getattr(self, field) for field in (
            "adapter_size", "reduction_factor", "activation", "initializer_std", "scaling",
            "use_gating", "ln_before", "ln_after", "adapter_residual_before_ln",
            "init_weights", "dropout")}

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
