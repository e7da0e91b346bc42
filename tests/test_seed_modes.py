"""Seed modes (``noise="comfyui" | "a1111"``): the noise each program draws for a seed, written out here in plain torch
(and torchsde, and a scalar Philox) from the programs' documented behaviour, against :mod:`k_diffusing.seeding`, the
KScheduler and the K pipelines. Bit for bit on the CPU in float32 unless a tolerance is stated.

The rules (see k_diffusing/seeding.py for the source of each): ComfyUI draws the batch's initial noise on the CPU from
``torch.manual_seed(seed)``, per-step noise from one generator on the device seeded ``seed`` (+1 on the CPU), and one
Brownian tree for the batch on the CPU; A1111 gives image i the seed ``seed + i``, its own generator on the RNG source
(continued after the initial draw, or re-seeded ``seed + ENSD``), its own Brownian tree drawing through that source,
and a slerp towards the variation seed's noise.
"""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
torchsde = pytest.importorskip("torchsde")

from diffusers import StableDiffusionXLPipeline  # noqa: E402

from k_diffusing import KFluxPipeline, KScheduler, KSDXLPipeline, get_sampler, seeding  # noqa: E402
from k_diffusing.denoisers import DiscreteDenoiser, FlowDenoiser, sigmas_from_alphas_cumprod  # noqa: E402
from k_diffusing.pipelines.variants import KSDXLImg2ImgPipeline  # noqa: E402
from k_diffusing.schedules import get_sigmas  # noqa: E402
from k_diffusing.testing.tiny import analytic_sdxl_pipeline, sdxl_scheduler_config, tiny_sdxl_components  # noqa: E402
from k_diffusing.testing.tiny_flux import tiny_flux_components  # noqa: E402

PROMPT = "a photo of a cat"
SHAPE = (2, 4, 16, 16)  # a batch of 2 tiny SDXL latents (C H W = 1024, a multiple of 16)
SEED = 1234

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have"),  # torchsde's interval-end rounding
    pytest.mark.usefixtures("single_thread"),
]

COMFYUI = seeding.seed_mode("comfyui")
A1111 = seeding.seed_mode("a1111")


def _f32(value: float) -> float:
    return float(np.float32(value))


# --- the programs' rules, written out --------------------------------------------------------------------------------


def comfy_initial(seed, shape):
    """comfy/sample.py prepare_noise: the global CPU generator seeded, one float32 randn of the whole batch."""
    generator = torch.manual_seed(seed)
    return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")


def comfy_step_draws(seed, shape, count):
    """comfy/k_diffusion/sampling.py default_noise_sampler on the CPU: Generator(cpu) seeded seed + 1, randn(x.size())
    per call."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed + 1)
    return [torch.randn(shape, dtype=torch.float32, device="cpu", generator=generator) for _ in range(count)]


def comfy_brownian(seed, shape, sigmas):
    """ComfyUI's BrownianTreeNoiseSampler(cpu=True) with an int seed: one torchsde tree with w0 = zeros of the batch's
    shape over [min positive sigma, max sigma] (float32), queried at float32 times sorted ascending, the sign flipped
    for a descending pair, over sqrt(|t1 - t0|) in float32."""
    sig = torch.tensor(sigmas, dtype=torch.float32)
    t_min, t_max = sig[sig > 0].min(), sig.max()
    tree = torchsde.BrownianTree(t_min, torch.zeros(shape), t_max, entropy=seed)

    def noise(sigma, sigma_next):
        t0, t1 = torch.tensor(sigma, dtype=torch.float32), torch.tensor(sigma_next, dtype=torch.float32)
        lo, hi, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        return tree(lo, hi) * sign / (t1 - t0).abs().sqrt()

    return noise


def a1111_image(seed, shape):
    """modules/rng.py create_generator + randn (CPU source, or the GPU source on a CPU device): the first draw of a
    generator seeded ``seed``, of one image's shape."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def a1111_slerp(val, low, high):
    """modules/rng.py slerp on one image's (C, H, W) noise: unit vectors along dim 1, cosines summed over it; linear
    (weights reversed) when their mean exceeds 0.9995."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


M32 = 0xFFFFFFFF


def philox_scalar(counter, key):
    """Philox4x32-10 on Python ints, Random123's round order (round, then bump the key), for one counter."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_ in range(10):
        hi0, lo0 = divmod(0xD2511F53 * c0, 2**32)
        hi1, lo1 = divmod(0xCD9E8D57 * c2, 2**32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        if round_ < 9:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def nv_scalar(seed, offset, n):
    """A1111's NV draw number ``offset`` of ``n`` values (modules/rng_philox.py): element i from counter
    (offset, 0, i, 0), key (low, high word of the seed), Box-Muller on words 0 and 1 in float64 with the file's float32
    constants, rounded to float32."""
    unit, angle = float(np.float32(2.3283064e-10)), float(np.float32(2.3283064e-10 * 6.2831855))
    out = []
    for i in range(n):
        w0, w1, _, _ = philox_scalar((offset, 0, i, 0), (seed & M32, seed >> 32))
        u, v = w0 * unit + unit / 2, w1 * angle + angle / 2
        out.append(np.float32(math.sqrt(-2.0 * math.log(u)) * math.sin(v)))
    return torch.tensor(np.array(out, dtype=np.float32))


# --- options and refusals ------------------------------------------------------------------------------------------


def test_modes_and_options_are_checked():
    assert seeding.seed_mode() == seeding.SeedMode("diffusers")
    assert seeding.seed_mode("a1111", {"rng": "NV"}).rng == "nv"
    with pytest.raises(ValueError, match="unknown noise mode 'comfy'. Did you mean 'comfyui'"):
        seeding.seed_mode("comfy")
    with pytest.raises(ValueError, match=r"noise='comfyui' does not take option\(s\) \['rng'\]: it takes none"):
        seeding.seed_mode("comfyui", {"rng": "cpu"})
    with pytest.raises(ValueError, match=r"\['seed'\]: it takes rng, subseed, subseed_strength, eta_noise_seed_delta"):
        seeding.seed_mode("a1111", {"seed": 3})
    with pytest.raises(ValueError, match="rng='tpu' is not an A1111 RNG source; accepted: gpu, cpu, nv"):
        seeding.seed_mode("a1111", {"rng": "tpu"})
    with pytest.raises(ValueError, match=r"subseed_strength must be a number in \[0, 1\]"):
        seeding.seed_mode("a1111", {"subseed": 1, "subseed_strength": 1.5})
    with pytest.raises(ValueError, match="needs a subseed"):
        seeding.seed_mode("a1111", {"subseed_strength": 0.5})
    with pytest.raises(TypeError, match="eta_noise_seed_delta must be an int"):
        seeding.seed_mode("a1111", {"eta_noise_seed_delta": 1.5})
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        seeding.check_seeds(-1)


def test_kscheduler_checks_its_mode():
    config = sdxl_scheduler_config()
    with pytest.raises(ValueError, match="quantize_timesteps=False contradicts it"):
        KScheduler.from_config(config, noise="comfyui", quantize_timesteps=False)
    with pytest.raises(ValueError, match="both choose the sampler's noise"):
        KScheduler.from_config(config, sampler="euler_ancestral", noise="a1111", sampler_kwargs={"noise_sampler": len})
    with pytest.raises(ValueError, match="applies to noise='comfyui' or 'a1111'"):
        KScheduler.from_config(config).set_seed(3)
    scheduler = KScheduler.from_config(config, sampler="euler_ancestral", noise="a1111",
                                       noise_options={"rng": "nv"})
    with pytest.raises(ValueError, match="need the initial noise drawn by k_diffusing.seeding.initial_noise"):
        scheduler.set_timesteps(4)  # the NV source needs set_seed (the pipeline's generators cannot draw it)
    scheduler.set_seed(SEED)
    scheduler.set_timesteps(4)
    saved = KScheduler.from_config({**scheduler.config, "_class_name": "KScheduler"})  # as saved
    assert (saved.noise_mode, saved.config.noise_options) == (scheduler.noise_mode, {"rng": "nv"})


class _NoNetwork:
    """Forward pre-hooks that fail on any call of the text encoders, the UNet or the VAE."""

    def __init__(self, pipe):
        modules = [pipe.text_encoder, pipe.text_encoder_2, pipe.unet, pipe.vae]
        self.handles = [m.register_forward_pre_hook(self._fail) for m in modules]

    @staticmethod
    def _fail(*_):
        raise AssertionError("a network ran before the refusal")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def comps():
    return tiny_sdxl_components()


def _sdxl(comps, cls=KSDXLPipeline, scheduler=None):
    pipe = cls(**{**comps, **({"scheduler": scheduler} if scheduler is not None else {})}, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("kwargs,error,match", [
    ({"noise": "comfyui", "seed": 1, "generator": torch.Generator()}, ValueError, "two seed sources"),
    ({"seed": 1}, ValueError, "seed= applies to noise='comfyui' or noise='a1111'"),
    ({"noise": "a1111"}, ValueError, "noise='a1111' needs seed="),
    ({"noise": "a1111", "seed": 1, "noise_options": {"sub_seed": 2}}, ValueError, r"\['sub_seed'\]: it takes rng"),
    ({"noise": "a1111", "seed": 1, "noise_options": {"rng": "xpu"}}, ValueError, "rng='xpu' is not an A1111 RNG"),
    ({"noise": "comfyui", "seed": [1, 2]}, ValueError, "one int seed for the whole batch"),
    ({"noise": "comfyui", "seed": 1, "latents": torch.zeros(1, 4, 16, 16)}, ValueError, "latents= would replace"),
    ({"noise": "ComfyUI", "seed": 1}, ValueError, "unknown noise mode"),
    ({"noise": "a1111", "seed": 1.5}, TypeError, "seed must be an int"),
])
def test_k_pipeline_refusals_come_before_any_network_call(comps, kwargs, error, match):
    pipe = _sdxl(comps)
    with _NoNetwork(pipe), pytest.raises(error, match=match):
        pipe(PROMPT, num_inference_steps=2, output_type="latent", **kwargs)


def test_variants_refuse_what_only_text_to_image_pipelines_draw(comps):
    pipe = _sdxl(comps, KSDXLImg2ImgPipeline)
    image = torch.zeros(1, 3, 32, 32)
    with _NoNetwork(pipe), pytest.raises(ValueError, match="use KSDXLPipeline or KFluxPipeline"):
        pipe(PROMPT, image=image, num_inference_steps=2, output_type="latent", noise="a1111", seed=1,
             noise_options={"rng": "nv"})


# --- ComfyUI -------------------------------------------------------------------------------------------------------


def test_comfyui_initial_and_first_three_step_noises_for_a_batch_of_two():
    initial = seeding.initial_noise(COMFYUI, SEED, SHAPE)
    assert initial.dtype == torch.float32 and torch.equal(initial, comfy_initial(SEED, SHAPE))
    sampler = seeding.noise_sampler(COMFYUI, SEED, SHAPE, "cpu", [14.6, 1.0, 0.0])
    ours = [sampler(1.0, 0.5) for _ in range(3)]
    for draw, reference in zip(ours, comfy_step_draws(SEED, SHAPE, 3)):
        assert torch.equal(draw, reference)
    # ComfyUI PR 11528: on the CPU the step noise no longer repeats the initial noise (seed + 1)
    assert not torch.equal(ours[0], initial)
    assert torch.equal(seeding.ComfyUINoiseSampler(SEED - 1, SHAPE)(), initial)  # the rule's +1, seen from below


def test_comfyui_brownian_tree_is_one_tree_for_the_batch():
    sigmas = [14.614642, 6.2, 2.1, 0.57, 0.029167, 0.0]
    ours = seeding.noise_sampler(COMFYUI, SEED, SHAPE, "cpu", sigmas, brownian=True)
    reference = comfy_brownian(SEED, SHAPE, sigmas)
    for s, s_next in [(14.614642, 6.2), (6.2, 2.1), (2.1, 1.03), (1.03, 0.57), (0.57, 0.029167)]:
        assert torch.equal(ours(s, s_next), reference(s, s_next)), (s, s_next)
    # float64 query times are read as the program's float32 sigmas
    assert torch.equal(ours(6.2, 2.1), ours(_f32(6.2), _f32(2.1)))


def test_comfyui_initial_scale_and_max_denoise():
    top = 14.614641
    s = torch.tensor(top, dtype=torch.float32)
    assert seeding.initial_scale(COMFYUI, top, top) == float(torch.sqrt(1.0 + s**2.0))  # at the top: sqrt(1 + s^2)
    assert seeding.initial_scale(COMFYUI, top * (1 + 5e-6), top) == float(torch.sqrt(1.0 + torch.tensor(
        _f32(top * (1 + 5e-6))) ** 2.0))  # within rel_tol 1e-5, and above it
    assert seeding.initial_scale(COMFYUI, 10.0, top) == 10.0  # below: sigma_0
    assert seeding.initial_scale(COMFYUI, 0.9, None, flow=True) == _f32(0.9)  # CONST: sigma_0 * noise
    assert seeding.initial_scale(A1111, top, top) == _f32(top)  # A1111: x * sigmas[0]
    karras = KScheduler.from_config(sdxl_scheduler_config(), sampler="euler", sigma_schedule="karras", noise="comfyui")
    karras.set_timesteps(6)
    s0 = torch.tensor(karras.k_sigmas[0], dtype=torch.float32)
    assert karras.init_noise_sigma == float(torch.sqrt(1.0 + s0**2.0))
    own = KScheduler.from_config(sdxl_scheduler_config(), sampler="euler", noise="comfyui")  # 'leading': below the top
    own.set_timesteps(6)
    assert own.init_noise_sigma == _f32(own.k_sigmas[0])


def test_comfyui_timesteps_are_the_nearest_table_entry_in_log_sigma():
    scheduler = KScheduler.from_config(sdxl_scheduler_config(), sampler="dpmpp_2m", sigma_schedule="karras",
                                       noise="comfyui")
    scheduler.set_timesteps(12)
    table = sigmas_from_alphas_cumprod(scheduler.base.alphas_cumprod.float())
    log_sigmas = table.log()
    sigma = torch.tensor(scheduler.k_sigmas[:-1], dtype=torch.float32)
    # comfy/model_sampling.py ModelSamplingDiscrete.timestep, in float32
    expected = (sigma.log()[None, :] - log_sigmas[:, None]).abs().argmin(dim=0).to(torch.float32)
    assert torch.equal(scheduler.timesteps, expected)
    assert all(float(t).is_integer() for t in scheduler.timesteps)
    continuous = KScheduler.from_config(sdxl_scheduler_config(), sampler="dpmpp_2m", sigma_schedule="karras",
                                        noise="a1111")
    continuous.set_timesteps(12)
    assert not all(float(t).is_integer() for t in continuous.timesteps)


def test_the_bridges_quantized_timesteps_are_comfyuis_rule():
    """DiscreteDenoiser(timesteps="quantized"), tensor and host paths, against ModelSamplingDiscrete.timestep (argmin
    of |log sigma - log_sigmas| in float32; ties to the lower index) on 20000 log-uniform sigmas, some beyond the table.
    (Measured: no mismatch. ComfyUI builds its table in float64 before rounding it to float32, diffusers in float32:
    the tables differ by up to 1.3e-5 relative, which moves 2 of these 20000 timesteps; the rule is what is tested.)"""
    from k_diffusing.testing.tiny import sdxl_alphas_cumprod

    bridge = DiscreteDenoiser(None, sdxl_alphas_cumprod(), timesteps="quantized")
    log_sigmas = sigmas_from_alphas_cumprod(sdxl_alphas_cumprod().float()).log()
    generator = torch.Generator().manual_seed(0)
    sigma = torch.empty(20000).uniform_(float(log_sigmas[0]) - 0.5, float(log_sigmas[-1]) + 0.5, generator=generator)
    sigma = sigma.exp()
    expected = (sigma.log()[None, :] - log_sigmas[:, None]).abs().argmin(dim=0).to(torch.float32)
    assert torch.equal(bridge.sigma_to_t(sigma), expected)
    assert torch.equal(torch.tensor([bridge.host_t(float(s)) for s in sigma]), expected)


@pytest.mark.parametrize("mode,sampler,drops", [
    ("comfyui", "dpm_2", True), ("comfyui", "dpm_2_ancestral", True), ("comfyui", "uni_pc", True),
    ("comfyui", "uni_pc_bh2", True), ("comfyui", "dpmpp_3m_sde", False), ("comfyui", "euler", False),
    ("a1111", "dpm_2", True), ("a1111", "DPM2 a", True), ("a1111", "dpmpp_3m_sde", True), ("a1111", "uni_pc", False),
    ("diffusers", "dpm_2", False),
])
def test_penultimate_sigma_is_dropped_where_the_program_drops_it(mode, sampler, drops):
    config = sdxl_scheduler_config()
    steps = 7
    named = KScheduler.from_config(config, sampler=sampler, sigma_schedule="karras", noise=mode)
    named.set_timesteps(steps)
    table = sigmas_from_alphas_cumprod(named.base.alphas_cumprod.double())
    full = get_sigmas("karras", steps + drops, sigma_table=table)
    expected = torch.cat([full[:-2], full[-1:]]) if drops else full
    assert named.k_sigmas == expected.tolist()
    assert len(named.k_sigmas) == steps + 1
    own = KScheduler.from_config(config, sampler=sampler, noise=mode)
    own.set_timesteps(steps)
    plain = KScheduler.from_config(config, sampler=sampler)
    plain.set_timesteps(steps + drops)
    expected = plain.k_sigmas[:-2] + plain.k_sigmas[-1:] if drops else plain.k_sigmas
    assert own.k_sigmas == expected


def test_seed_modes_take_karras_flags_over_the_whole_table():
    config = sdxl_scheduler_config(use_karras_sigmas=True)
    diffusers_own = KScheduler.from_config(config, sampler="euler")
    diffusers_own.set_timesteps(8)
    comfy = KScheduler.from_config(config, sampler="euler", noise="comfyui")
    comfy.set_timesteps(8)
    table = sigmas_from_alphas_cumprod(comfy.base.alphas_cumprod.double())
    assert comfy.k_sigmas == get_sigmas("karras", 8, sigma_table=table).tolist()
    assert comfy.k_sigmas[0] == pytest.approx(float(table[-1]))
    assert diffusers_own.k_sigmas[0] < 0.9 * comfy.k_sigmas[0]  # 'leading' spacing stops short of the table's top


def test_comfyui_batch_invariance_of_the_initial_noise_on_the_cpu():
    """torch's CPU normal sampler fills blocks of 16 and redraws a partial last block: image 0 of a batch equals the
    image drawn alone when C*H*W is a multiple of 16 (tiny SDXL 4x16x16, FLUX 16xhxw), not otherwise."""
    for shape in [(4, 16, 16), (16, 4, 4), (4, 2, 2), (4, 128, 128)]:
        batch = seeding.initial_noise(COMFYUI, SEED, (3, *shape))
        assert torch.equal(batch[0], seeding.initial_noise(COMFYUI, SEED, (1, *shape))[0]), shape
    odd = (4, 3, 3)
    assert not torch.equal(seeding.initial_noise(COMFYUI, SEED, (2, *odd))[0],
                           seeding.initial_noise(COMFYUI, SEED, (1, *odd))[0])
    # per-step noise: one generator for the batch, so image 0's second draw depends on the batch size
    two, one = seeding.ComfyUINoiseSampler(SEED, SHAPE), seeding.ComfyUINoiseSampler(SEED, (1, *SHAPE[1:]))
    assert torch.equal(two()[0], one()[0])
    assert not torch.equal(two()[0], one()[0])


# --- A1111 ---------------------------------------------------------------------------------------------------------


def test_a1111_seeds_and_subseeds():
    assert seeding.a1111_seeds(7, 3) == [7, 8, 9]
    assert seeding.a1111_seeds(7, 3, subseed_strength=0.4) == [7, 7, 7]  # the variation seeds differ instead
    assert seeding.a1111_seeds([5, 2, 9], 3) == [5, 2, 9]
    assert seeding.a1111_subseeds(100, 3) == [100, 101, 102]
    assert seeding.a1111_subseeds([4], 2) == [4, 0]
    with pytest.raises(ValueError, match="got 2 seeds for a batch of 3"):
        seeding.a1111_seeds([1, 2], 3)


@pytest.mark.parametrize("rng", ["cpu", "gpu"])  # on a CPU device A1111's GPU source is a CPU generator too
def test_a1111_initial_and_first_three_step_noises_for_a_batch_of_two(rng):
    mode = seeding.seed_mode("a1111", {"rng": rng})
    initial = seeding.initial_noise(mode, SEED, SHAPE)
    generators = [torch.Generator("cpu").manual_seed(SEED + i) for i in range(2)]
    expected = torch.stack([torch.randn(SHAPE[1:], generator=g) for g in generators])
    assert torch.equal(initial, expected)
    sampler = seeding.noise_sampler(mode, [SEED, SEED + 1], SHAPE, "cpu", [14.6, 1.0, 0.0])
    for _ in range(3):  # each image's generator continues after its initial draw
        assert torch.equal(sampler(1.0, 0.5), torch.stack([torch.randn(SHAPE[1:], generator=g) for g in generators]))


def test_a1111_eta_noise_seed_delta_reseeds_the_step_generators():
    mode = seeding.seed_mode("a1111", {"eta_noise_seed_delta": 31337})
    sampler = seeding.noise_sampler(mode, [SEED, SEED + 1], SHAPE, "cpu", [14.6, 1.0, 0.0])
    generators = [torch.Generator("cpu").manual_seed(SEED + i + 31337) for i in range(2)]
    for _ in range(3):
        assert torch.equal(sampler(1.0, 0.5), torch.stack([torch.randn(SHAPE[1:], generator=g) for g in generators]))
    assert torch.equal(seeding.initial_noise(mode, SEED, SHAPE), seeding.initial_noise(A1111, SEED, SHAPE))


def test_a1111_variation_seed_slerp():
    mode = seeding.seed_mode("a1111", {"subseed": 99, "subseed_strength": 0.3})
    noise = seeding.initial_noise(mode, SEED, SHAPE)
    for i in range(2):  # every image has the seed, variation seeds 99 and 100
        expected = a1111_slerp(0.3, a1111_image(SEED, SHAPE[1:]), a1111_image(99 + i, SHAPE[1:]))
        assert torch.equal(noise[i], expected)
    assert not torch.equal(noise[0], noise[1])
    full = seeding.initial_noise(seeding.seed_mode("a1111", {"subseed": 99, "subseed_strength": 1.0}), SEED, SHAPE)
    torch.testing.assert_close(full[0], a1111_image(99, SHAPE[1:]), rtol=0, atol=2e-5)  # strength 1: the subseed's
    # identical noise takes the linear branch (cosine 1) instead of dividing by sin(0)
    same = seeding.a1111_slerp(0.3, noise[0], noise[0].clone())
    assert torch.isfinite(same).all() and torch.allclose(same, noise[0], atol=1e-6)
    # nearly parallel noise (mean cosine > 0.9995): A1111's linear blend, its weights the other way round
    low = a1111_image(SEED, SHAPE[1:])
    high = low + 1e-3 * a1111_image(SEED + 1, SHAPE[1:])
    near = seeding.a1111_slerp(0.3, low, high)
    assert torch.equal(near, a1111_slerp(0.3, low, high))
    assert torch.equal(near, low * 0.3 + high * 0.7)


def test_philox_known_answers():
    """Random123 tests/kat_vectors, the three 'philox4x32 10' lines (counter[4] key[2] -> output[4])."""
    vectors = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((M32,) * 4, (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, expected in vectors:
        out = seeding.philox4x32([[c] for c in counter], [[k] for k in key])
        assert tuple(int(w) for w in out[:, 0]) == expected
        assert philox_scalar(counter, key) == expected  # the test's own scalar version too
    broken = seeding.philox4x32([[0]] * 4, [[0]] * 2, rounds=7)  # the check can fail: 7 rounds is another generator
    assert tuple(int(w) for w in broken[:, 0]) != vectors[0][2]


@pytest.mark.parametrize("seed", [0, 1234, 2**32 + 5])  # the last one uses the key's high word
def test_nv_source_equals_a_scalar_philox_with_a1111s_layout(seed):
    generator = seeding.PhiloxGenerator(seed)
    for offset in range(2):  # call k uses counter word 0 = k
        assert torch.equal(torch.from_numpy(generator.randn((2, 3, 4))).flatten(), nv_scalar(seed, offset, 24))


def test_nv_source_against_a1111s_documented_output():
    """modules/rng_philox.py's docstring: Generator(seed=0).randn((3, 4)) (printed to 8 digits, CUDA's values for the
    same draw; the NumPy code itself differs from them by up to 2e-7)."""
    documented = torch.tensor([[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                               [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                               [-1.07454231, -0.36314407, -1.67105067, 2.26550497]])
    ours = torch.from_numpy(seeding.PhiloxGenerator(0).randn((3, 4)))
    torch.testing.assert_close(ours, documented, rtol=0, atol=3e-7)


def test_nv_initial_and_step_noise():
    mode = seeding.seed_mode("a1111", {"rng": "nv"})
    shape = (2, 4, 2, 2)
    initial = seeding.initial_noise(mode, SEED, shape)
    for i in range(2):
        assert torch.equal(initial[i].flatten(), nv_scalar(SEED + i, 0, 16))
    sampler = seeding.noise_sampler(mode, [SEED, SEED + 1], shape, "cpu", [14.6, 1.0, 0.0])
    for offset in (1, 2, 3):
        draw = sampler(1.0, 0.5)
        for i in range(2):
            assert torch.equal(draw[i].flatten(), nv_scalar(SEED + i, offset, 16))


def _kdiffusion_tree(kdiff, x, sigmas, seeds):
    """A1111's create_noise_sampler: k-diffusion's BrownianTreeNoiseSampler with the images' seeds over the
    schedule's float32 range, queried with float32 sigmas."""
    sig = torch.tensor(sigmas, dtype=torch.float32)
    sampler = kdiff.BrownianTreeNoiseSampler(x, sig[sig > 0].min(), sig.max(), seed=list(seeds))
    return lambda s, s_next: sampler(torch.tensor(s, dtype=torch.float32), torch.tensor(s_next, dtype=torch.float32))


PAIRS = [(14.614642, 6.2), (6.2, 2.1), (2.1, 1.03), (1.03, 0.57), (0.57, 0.029167)]
SIGMAS = [14.614642, 6.2, 2.1, 0.57, 0.029167, 0.0]


def test_a1111_brownian_trees_are_k_diffusions_per_image_trees(kdiff):
    ours = seeding.noise_sampler(A1111, [SEED, SEED + 1], SHAPE, "cpu", SIGMAS, brownian=True)
    reference = _kdiffusion_tree(kdiff, torch.zeros(SHAPE), SIGMAS, [SEED, SEED + 1])
    for s, s_next in PAIRS:
        assert torch.equal(ours(s, s_next), reference(s, s_next)), (s, s_next)
    alone = seeding.noise_sampler(A1111, [SEED + 1], (1, *SHAPE[1:]), "cpu", SIGMAS, brownian=True)
    assert torch.equal(alone(6.2, 2.1)[0], ours(6.2, 2.1)[1])  # one tree per image: batch-invariant


def test_a1111_brownian_trees_draw_through_the_nv_source(kdiff, monkeypatch):
    """A1111 routes torchsde's Gaussians through its RNG source (sd_samplers_common.replace_torchsde_browinan ->
    rng.randn_local): with "nv", each tree node's draw is the first NV draw of the node's seed."""
    from torchsde._brownian import brownian_interval

    shape = (2, 2, 2, 2)
    mode = seeding.seed_mode("a1111", {"rng": "nv"})
    ours = seeding.noise_sampler(mode, [SEED, SEED + 1], shape, "cpu", SIGMAS, brownian=True)
    ours_values = [ours(s, s_next) for s, s_next in PAIRS[:3]]

    def nv_randn(size, dtype, device, seed):
        return nv_scalar(int(seed), 0, math.prod(size)).reshape(tuple(size)).to(device=device, dtype=dtype)

    monkeypatch.setattr(brownian_interval, "_randn", nv_randn)
    reference = _kdiffusion_tree(kdiff, torch.zeros(shape), SIGMAS, [SEED, SEED + 1])
    for (s, s_next), value in zip(PAIRS[:3], ours_values):
        assert torch.equal(value, reference(s, s_next))
    monkeypatch.undo()
    plain = _kdiffusion_tree(kdiff, torch.zeros(shape), SIGMAS, [SEED, SEED + 1])
    assert not torch.equal(plain(*PAIRS[0]), ours_values[0])  # the source matters
    assert brownian_interval._randn is not nv_randn  # ours put torchsde's own back


def test_brownian_ranges():
    """ComfyUI spans its tree over the run's sigmas (KSampler passes a truncated schedule with denoise < 1); A1111's
    create_noise_sampler over the whole schedule, also in img2img (sample_img2img passes ``sigmas``)."""
    full, run = [14.6, 6.2, 2.1, 0.57, 0.03, 0.0], [2.1, 0.57, 0.03, 0.0]
    comfy = seeding.noise_sampler(COMFYUI, SEED, SHAPE, "cpu", run, brownian=True, full_sigmas=full)
    a1111 = seeding.noise_sampler(A1111, [SEED, SEED + 1], SHAPE, "cpu", run, brownian=True, full_sigmas=full)
    assert (comfy.t_min, comfy.t_max) == (_f32(0.03), _f32(2.1))
    assert (a1111.t_min, a1111.t_max) == (_f32(0.03), _f32(14.6))


def test_a1111_image_zero_does_not_depend_on_the_batch():
    for options in [{}, {"rng": "nv"}, {"eta_noise_seed_delta": 5}, {"subseed": 3, "subseed_strength": 0.5}]:
        mode = seeding.seed_mode("a1111", options)
        shape = (3, 4, 4, 4)
        batch = seeding.initial_noise(mode, SEED, shape)
        alone = seeding.initial_noise(mode, SEED, (1, *shape[1:]))
        assert torch.equal(batch[0], alone[0]), options
        seeds = seeding.a1111_seeds(SEED, 3, mode.subseed_strength)
        steps_batch = seeding.noise_sampler(mode, seeds, shape, "cpu", SIGMAS)
        steps_alone = seeding.noise_sampler(mode, seeds[:1], (1, *shape[1:]), "cpu", SIGMAS)
        for _ in range(3):
            assert torch.equal(steps_batch()[0], steps_alone()[0]), options


# --- end to end on the tiny pipelines ------------------------------------------------------------------------------


def _sdxl_by_hand(pipe, sampler, steps, images, x, noise_sampler, schedule="karras"):
    """The sampler run directly on the bridge over the pipeline's UNet (integer timesteps, classifier-free guidance
    batched as the parent does), from ``x`` on the karras schedule of ``steps`` with the ComfyUI/A1111 penultimate
    rule applied by the caller through ``schedule``."""
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=images,
                                                                   do_classifier_free_guidance=True)
    time_ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=embeds.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    time_ids = time_ids.repeat(images, 1)
    cond = {"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": torch.cat([time_ids, time_ids])}
    hidden = torch.cat([negative, embeds])

    def net(x_in, t):
        uncond, text = pipe.unet(torch.cat([x_in] * 2), torch.cat([t] * 2), encoder_hidden_states=hidden,
                                 added_cond_kwargs=cond, return_dict=False)[0].chunk(2)
        return uncond + 5.0 * (text - uncond)

    bridge = DiscreteDenoiser(net, pipe.scheduler.alphas_cumprod, "epsilon", timesteps="quantized")
    kwargs = {"noise_sampler": noise_sampler} if "noise_sampler" in get_sampler(sampler).options else {}
    with torch.no_grad():
        return get_sampler(sampler)(bridge, x, schedule, disable=True, **kwargs)


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "dpm_2"])
def test_ksdxl_comfyui_equals_the_sampler_run_by_hand(comps, sampler):
    pipe = _sdxl(comps)
    steps = 5
    out = pipe(PROMPT, num_inference_steps=steps, sampler=sampler, sigma_schedule="karras", noise="comfyui", seed=SEED,
               num_images_per_prompt=2, output_type="latent").images
    table = sigmas_from_alphas_cumprod(pipe.scheduler.alphas_cumprod.double())
    drop = sampler == "dpm_2"
    sigmas = get_sigmas("karras", steps + drop, sigma_table=table)
    if drop:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    s0 = torch.tensor(float(sigmas[0]), dtype=torch.float32)
    x = comfy_initial(SEED, SHAPE) * torch.sqrt(1.0 + s0**2.0)  # karras starts at the table's top: max_denoise
    if sampler == "dpmpp_2m_sde":
        noise = comfy_brownian(SEED, SHAPE, sigmas.tolist())
    else:
        draws = iter(comfy_step_draws(SEED, SHAPE, 3 * steps))
        noise = lambda *_: next(draws)  # noqa: E731
    reference = _sdxl_by_hand(pipe, sampler, steps, 2, x, noise, sigmas)
    assert torch.equal(pipe.k_sigmas, sigmas)
    # measured 0.0: the same arithmetic on the same noise
    assert float((out - reference).abs().max()) == 0.0


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_sde"])
def test_kscheduler_comfyui_in_the_parent_pipeline_equals_the_k_pipeline(comps, sampler):
    k_pipe = _sdxl(comps)
    expected = k_pipe(PROMPT, num_inference_steps=4, sampler=sampler, noise="comfyui", seed=SEED,
                      num_images_per_prompt=2, output_type="latent").images
    scheduler = KScheduler.from_scheduler(comps["scheduler"], sampler=sampler, noise="comfyui")
    parent = _sdxl(comps, StableDiffusionXLPipeline, scheduler)
    out = parent(PROMPT, num_inference_steps=4, generator=torch.Generator().manual_seed(SEED), num_images_per_prompt=2,
                 output_type="latent").images
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="draws the whole batch's initial noise on the CPU from one seed"):
        parent(PROMPT, num_inference_steps=4, num_images_per_prompt=2, output_type="latent",
               generator=[torch.Generator().manual_seed(SEED + i) for i in range(2)])


def test_kscheduler_a1111_in_the_parent_pipeline_equals_the_k_pipeline(comps):
    options = {"rng": "cpu", "eta_noise_seed_delta": 7}
    k_pipe = _sdxl(comps)
    expected = k_pipe(PROMPT, num_inference_steps=4, sampler="euler_ancestral", noise="a1111", seed=SEED,
                      noise_options=options, num_images_per_prompt=2, output_type="latent").images
    scheduler = KScheduler.from_scheduler(comps["scheduler"], sampler="euler_ancestral", noise="a1111",
                                          noise_options=options)
    parent = _sdxl(comps, StableDiffusionXLPipeline, scheduler)
    generators = [torch.Generator().manual_seed(SEED + i) for i in range(2)]
    out = parent(PROMPT, num_inference_steps=4, generator=generators, num_images_per_prompt=2,
                 output_type="latent").images
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="gives each image its own seed: pass a list of 2 generators"):
        parent(PROMPT, num_inference_steps=4, generator=torch.Generator().manual_seed(SEED), num_images_per_prompt=2,
               output_type="latent")


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde"])
@pytest.mark.parametrize("options", [{}, {"rng": "nv", "subseed": 5, "subseed_strength": 0.25}])
def test_a1111_image_zero_alone_equals_image_zero_of_a_batch(sampler, options):
    """Analytic (elementwise) UNet, so batching adds no round-off: per-image seeds, generators and trees."""
    pipe = analytic_sdxl_pipeline(pipeline_cls=KSDXLPipeline)
    pipe.set_progress_bar_config(disable=True)
    run = lambda n: pipe(PROMPT, num_inference_steps=4, sampler=sampler, noise="a1111", seed=SEED,  # noqa: E731
                         noise_options=options, num_images_per_prompt=n, output_type="latent").images
    batch, alone = run(3), run(1)
    assert torch.equal(batch[0], alone[0])
    assert not torch.equal(batch[0], batch[1])


@pytest.mark.parametrize("noise,options", [("comfyui", None), ("a1111", {"rng": "cpu"})])
def test_img2img_k_pipeline_gives_the_parent_the_programs_generators(comps, noise, options):
    """The other K pipelines pass the generators whose randn_tensor draws the program's noise (ComfyUI: one CPU
    generator; A1111's CPU source: one per image, seed + i) and the seeds to the KScheduler."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    k_pipe = _sdxl(comps, KSDXLImg2ImgPipeline)
    prompts = [PROMPT, "a dog"]
    expected = k_pipe(prompts, image=image, strength=0.6, num_inference_steps=5, sampler="dpmpp_2m_sde", noise=noise,
                      seed=SEED, noise_options=options, output_type="latent").images
    scheduler = KScheduler.from_scheduler(comps["scheduler"], sampler="dpmpp_2m_sde", noise=noise,
                                          noise_options=options)
    parent = _sdxl(comps, StableDiffusionXLImg2ImgPipeline, scheduler)
    generator = (torch.Generator().manual_seed(SEED) if noise == "comfyui"
                 else [torch.Generator().manual_seed(SEED + i) for i in range(2)])
    out = parent(prompts, image=image, strength=0.6, num_inference_steps=5, generator=generator,
                 output_type="latent").images
    assert torch.equal(out, expected)


def test_kflux_comfyui_draws_unpacked_noise_and_packs_it():
    comps = tiny_flux_components()
    pipe = KFluxPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    steps = 3
    out = pipe(PROMPT, num_inference_steps=steps, height=32, width=32, max_sequence_length=16,
               sampler="euler_ancestral", noise="comfyui", seed=SEED, output_type="latent").images
    embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=16)
    channels = pipe.transformer.config.in_channels // 4
    h = w = 2 * (32 // (2 * pipe.vae_scale_factor))
    unpacked = (1, channels, h, w)

    def pack(t):
        return pipe._pack_latents(t, 1, channels, h, w)

    image_ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", embeds.dtype)
    guidance = torch.full([1], 3.5) if pipe.transformer.config.guidance_embeds else None

    def net(x, t):
        return pipe.transformer(hidden_states=x, timestep=t / 1000, guidance=guidance, pooled_projections=pooled,
                                encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids,
                                return_dict=False)[0]

    draws = iter(comfy_step_draws(SEED, unpacked, steps))
    bridge = FlowDenoiser(net, comps["scheduler"].config.num_train_timesteps)
    with torch.no_grad():
        reference = get_sampler("euler_ancestral")(bridge, pack(comfy_initial(SEED, unpacked)), pipe.k_sigmas,
                                                   disable=True, noise_sampler=lambda *_: pack(next(draws)))
    # measured 0.0 (the bridge feeds the same sigma * 1000 timesteps as the scheduler's own pairs here)
    assert float((out - reference).abs().max()) <= 1e-6
    plain = KFluxPipeline(**comps)
    plain.set_progress_bar_config(disable=True)
    deterministic = plain(PROMPT, num_inference_steps=steps, height=32, width=32, max_sequence_length=16,
                          sampler="euler", noise="comfyui", seed=SEED, output_type="latent").images
    generator = plain(PROMPT, num_inference_steps=steps, height=32, width=32, max_sequence_length=16, sampler="euler",
                      generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    assert torch.equal(deterministic, generator)  # diffusers' one CPU generator draws ComfyUI's unpacked noise too


# --- generate: job keys, the parameters text, render_png ----------------------------------------------------------

import k_diffusing  # noqa: E402
from k_diffusing import generate  # noqa: E402

BASE_JOB = {"prompt": "a cat", "negative_prompt": "", "seed": 7, "sampler": "euler_ancestral", "schedule": None,
            "steps": 3, "width": 32, "height": 32, "guidance_scale": 5.0, "model": "embedded:sdxl"}


def test_generate_job_checks_refuse_bad_seed_modes_up_front(tmp_path):
    check = generate.check_job_values
    assert check({"noise": "a1111", "rng": "CPU"}, "l")["rng"] == "cpu"  # A1111 writes "CPU"
    for values, match in [({"noise": "comfy"}, "unknown noise mode 'comfy'. Did you mean 'comfyui'"),
                          ({"noise": "a1111", "rng": "tpu"}, "'rng' must be one of gpu, cpu, nv"),
                          ({"noise": "comfyui", "rng": "cpu"}, "'rng' apply to noise 'a1111'"),
                          ({"subseed_strength": 1.5}, r"'subseed_strength' must be in \[0, 1\]"),
                          ({"subseed": -1}, r"'subseed' must be in \[0, 2\*\*63\)"),
                          ({"eta_noise_seed_delta": 1.5}, "'eta_noise_seed_delta' must be a int"),
                          ({"noise": 3}, "'noise' must be a str")]:
        with pytest.raises(generate.JobError, match=match):
            check(dict(values), "jobs.jsonl, line 4")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "a", "rng": "nv", "eta_noise_seed_delta": 31337}\n{"prompt": "b"}\n')
    read = generate.read_jobs(jobs, {"noise": "a1111"}, "m")  # the mode from the command line, options per job
    assert (read[0].noise, read[0].rng, read[0].eta_noise_seed_delta, read[1].rng) == ("a1111", "nv", 31337, "gpu")
    with pytest.raises(generate.JobError, match="job 0: 'rng', 'eta_noise_seed_delta' apply to noise 'a1111'"):
        generate.read_jobs(jobs, {"noise": "comfyui"}, "m")
    with pytest.raises(generate.JobError, match="'subseed_strength' needs a 'subseed'"):
        generate.Job(index=0, **BASE_JOB, noise="a1111", subseed_strength=0.5)
    assert generate.main([str(jobs), "--out", str(tmp_path / "out"), "--noise", "comfy"]) == 2
    assert not (tmp_path / "out").exists()  # refused before any model is loaded or folder made


def test_generate_digest_and_parameters_unchanged_without_a_seed_mode():
    job = generate.Job(index=3, **BASE_JOB)
    old = {k: v for k, v in BASE_JOB.items()}  # the parameters before seed modes existed
    assert job.parameters() == old
    assert job.digest() == generate.hashlib.sha256(generate.json.dumps(old, sort_keys=True).encode()).hexdigest()[:10]
    assert generate.format_parameters(job.parameters(), "sdxl") == generate.format_parameters(old, "sdxl")
    seeded = generate.Job(index=3, **BASE_JOB, noise="a1111", rng="cpu")
    assert seeded.parameters() == {**old, "noise": "a1111", "rng": "cpu"} and seeded.digest() != job.digest()


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_parameters_text_records_the_seed_mode_as_a1111_does(kind):
    p = {**BASE_JOB, "noise": "a1111", "rng": "cpu", "subseed": 5, "subseed_strength": 0.25,
         "eta_noise_seed_delta": 31337}
    text = generate.format_parameters(p, kind)
    assert text.endswith('Model: "embedded:sdxl", Variation seed: 5, Variation seed strength: 0.25, ENSD: 31337, '
                         f"RNG: CPU, Seed mode: a1111, Version: k-diffusing {k_diffusing.__version__}")
    assert generate.parse_parameters(text) == p
    for extra in [{"noise": "comfyui"}, {"noise": "a1111"}, {"noise": "a1111", "rng": "nv"},
                  {"noise": "a1111", "subseed": 9}]:
        assert generate.parse_parameters(generate.format_parameters({**BASE_JOB, **extra}, kind)) == {**BASE_JOB,
                                                                                                      **extra}
    a1111_text = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 512x512, ENSD: 31337, RNG: NV"
    parsed = generate.parse_parameters(a1111_text)
    assert (parsed["noise"], parsed["rng"], parsed["eta_noise_seed_delta"]) == ("a1111", "nv", 31337)


class _Spy:
    """The pipeline, recording the keyword arguments of each call."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(*args, **kwargs)


def test_render_png_runs_the_jobs_seed_mode(comps):
    spy = _Spy(_sdxl(comps))
    job = generate.Job(index=0, **BASE_JOB, noise="a1111", rng="cpu", subseed=5, subseed_strength=0.25)
    generate.render_png(spy, "sdxl", job)
    call = spy.calls[-1]
    assert "generator" not in call
    assert (call["noise"], call["seed"]) == ("a1111", 7)
    assert call["noise_options"] == {"rng": "cpu", "eta_noise_seed_delta": 0, "subseed": 5, "subseed_strength": 0.25}
    generate.render_png(spy, "sdxl", generate.Job(index=0, **BASE_JOB))
    assert "noise" not in spy.calls[-1] and spy.calls[-1]["generator"].initial_seed() == 7
