"""The scheduler configs of the zoo's newer cases, each written out from its source as a plain config dict.

Each function returns a fresh dict: the model repository's ``scheduler/scheduler_config.json`` (without the
``_class_name`` and ``_diffusers_version`` bookkeeping keys), the config a model card tells users to build, or, where
diffusers' own fast test is the source, that test's constructor arguments. The source is named in each docstring.
"""

from __future__ import annotations


def sd15() -> dict:
    """runwayml/stable-diffusion-v1-5 (and stable-diffusion-v1-5/stable-diffusion-v1-5): PNDMScheduler (PLMS)."""
    return {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        "clip_sample": False,
    }


def controlnet_ddim() -> dict:
    """diffusers' SD ControlNet fast tests (``tests/pipelines/controlnet/test_controlnet.py``): DDIMScheduler with
    SD's betas, ``clip_sample`` and ``set_alpha_to_one`` off and the class defaults otherwise (``steps_offset`` 0,
    ``timestep_spacing`` leading), so the last timestep is 1 and the schedule ends on a repeated sigma."""
    return {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
    }


def consistency_sd15() -> dict:
    """``LCMScheduler.from_config`` / ``TCDScheduler.from_config`` of SD 1.5's config, as the model cards of
    latent-consistency/lcm-lora-sdv1-5 and h1t/TCD-SD15-LoRA build them: SD 1.5's betas, ``set_alpha_to_one`` off,
    ``steps_offset`` 1 and both classes' shared defaults (``original_inference_steps`` 50, ``timestep_scaling`` 10,
    leading spacing); key for key the published LCM Dreamshaper configs. The TCD card calls the pipeline with 4 steps,
    ``guidance_scale=0`` and ``eta=0.3`` (the paper's gamma, which the pipeline passes to ``step``)."""
    return {
        **sd15(),
        "original_inference_steps": 50,
        "timestep_scaling": 10.0,
        "timestep_spacing": "leading",
        "prediction_type": "epsilon",
        "rescale_betas_zero_snr": False,
    }


def playground_v25() -> dict:
    """playgroundai/playground-v2.5-1024px-aesthetic: EDMDPMSolverMultistepScheduler (EDM preconditioning,
    DPM-Solver++ 2M on Karras sigmas from 80 to 0.002, ``final_sigmas_type`` zero)."""
    return {
        "algorithm_type": "dpmsolver++",
        "dynamic_thresholding_ratio": 0.995,
        "euler_at_final": False,
        "final_sigmas_type": "zero",
        "lower_order_final": True,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "rho": 7.0,
        "sample_max_value": 1.0,
        "sigma_data": 0.5,
        "sigma_max": 80.0,
        "sigma_min": 0.002,
        "solver_order": 2,
        "solver_type": "midpoint",
        "thresholding": False,
    }


def playground_v25_euler() -> dict:
    """Playground v2.5's model card alternative, ``EDMEulerScheduler.from_config(<its config>)``: the EDM Euler
    defaults with the repository's sigma range."""
    return {
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "sigma_data": 0.5,
        "sigma_schedule": "karras",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "rho": 7.0,
        "final_sigmas_type": "zero",
    }


def pixart_alpha() -> dict:
    """PixArt-alpha/PixArt-XL-2-1024-MS (the same file as PixArt-Sigma-XL-2-1024-MS): DPMSolverMultistepScheduler,
    DPM-Solver++(2M) on linear betas 1e-4..0.02, linspace spacing. Its ``thresholding`` is false (and DPM-Solver has
    no ``clip_sample``): the real PixArt configs clip nothing."""
    return {
        "algorithm_type": "dpmsolver++",
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "dynamic_thresholding_ratio": 0.995,
        "euler_at_final": False,
        "lambda_min_clipped": -float("inf"),
        "lower_order_final": True,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "sample_max_value": 1.0,
        "solver_order": 2,
        "solver_type": "midpoint",
        "steps_offset": 0,
        "thresholding": False,
        "timestep_spacing": "linspace",
        "trained_betas": None,
        "use_karras_sigmas": False,
        "use_lu_lambdas": False,
        "variance_type": None,
    }


def kandinsky_ddim() -> dict:
    """diffusers' Kandinsky 2.1 and 2.2 img2img fast tests (``tests/pipelines/kandinsky/test_kandinsky_img2img.py``,
    ``tests/pipelines/kandinsky2_2/test_kandinsky_img2img.py``: the same dict): DDIMScheduler on *linear* betas
    0.00085..0.012, ``steps_offset`` 0, ``set_alpha_to_one`` and ``clip_sample`` off (the schedule ends on a repeated
    sigma, as the ControlNet one)."""
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 0,
        "prediction_type": "epsilon",
        "thresholding": False,
    }


def marigold_lcm() -> dict:
    """diffusers' Marigold depth fast test (``tests/pipelines/marigold/test_marigold_depth.py``): LCMScheduler in
    v-prediction on SD's ``scaled_linear`` betas, ``set_alpha_to_one`` off, ``steps_offset`` 1, no clipping or
    thresholding, the class defaults otherwise (``original_inference_steps`` 50, ``timestep_scaling`` 10, leading
    spacing)."""
    return {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction",
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "clip_sample": False,
        "thresholding": False,
    }


def cogvideox_2b() -> dict:
    """THUDM/CogVideoX-2b: CogVideoXDDIMScheduler, v-prediction on zero-terminal-SNR ``scaled_linear`` betas,
    trailing spacing, ``snr_shift_scale`` 3 (alpha_bar / (s - (s - 1) alpha_bar))."""
    return {
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "num_train_timesteps": 1000,
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "sample_max_value": 1.0,
        "set_alpha_to_one": True,
        "snr_shift_scale": 3.0,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
        "trained_betas": None,
    }


def cogvideox_5b() -> dict:
    """THUDM/CogVideoX-5b: CogVideoX-2b's config with ``snr_shift_scale`` 1 (as its derivatives publish it); the
    CogVideoX docs run it with ``CogVideoXDPMScheduler.from_config(<this>, timestep_spacing="trailing")``."""
    return {**cogvideox_2b(), "snr_shift_scale": 1.0}


def ltx_video() -> dict:
    """Lightricks/LTX-Video 0.9.1's FlowMatchEulerDiscreteScheduler (``shift_terminal`` 0.1) with dynamic shifting
    off: LTXConditionPipeline (the 0.9.5 pipeline) passes no ``mu``, which FlowMatchEuler requires when dynamic
    shifting is on (checked: it raises), so the configs it runs with have it off (the 0.9.5 file itself was not
    available to check). The pipeline passes its own ``timesteps`` (a linear-quadratic schedule times 1000)."""
    return {
        "base_image_seq_len": 1024,
        "base_shift": 0.95,
        "invert_sigmas": False,
        "max_image_seq_len": 4096,
        "max_shift": 2.05,
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "shift_terminal": 0.1,
        "use_beta_sigmas": False,
        "use_dynamic_shifting": False,
        "use_exponential_sigmas": False,
        "use_karras_sigmas": False,
    }


def shap_e() -> dict:
    """diffusers' Shap-E fast test (``tests/pipelines/shap_e/test_shap_e.py``), the keys of openai/shap-e's config:
    HeunDiscreteScheduler on the ``exp`` beta table of 1024 steps, Karras sigmas, x0 prediction
    (``prediction_type="sample"``) clipped to [-1, 1]."""
    return {
        "beta_schedule": "exp",
        "num_train_timesteps": 1024,
        "prediction_type": "sample",
        "use_karras_sigmas": True,
        "clip_sample": True,
        "clip_sample_range": 1.0,
    }


def sana_sprint() -> dict:
    """Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers: SCMScheduler (sCM, TrigFlow prediction,
    ``sigma_data`` 0.5); the pipeline passes ``max_timesteps`` and ``intermediate_timesteps`` to ``set_timesteps``."""
    return {"num_train_timesteps": 1000, "prediction_type": "trigflow", "sigma_data": 0.5}


def helios() -> dict:
    """diffusers' Helios fast test (``tests/pipelines/helios/test_helios.py``): HeliosScheduler with one stage over
    the whole range (``stages`` 1, ``stage_range`` [0, 1]) and dynamic shifting (the pipeline passes ``mu``), UniPC
    (bh2, order 2, x0 form) on flow sigmas by the class defaults. The class default (3 stages) fails the pipeline's
    ``set_timesteps`` with KeyError: None (checked: the pipeline passes no ``stage_index``)."""
    return {"stages": 1, "stage_range": [0, 1], "use_dynamic_shifting": True}
