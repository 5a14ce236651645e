"""The dataset config that holds one language, from the ``lang`` code the rest of asrkit uses.

``lang`` is Whisper's language code (ISO 639-1 where there is one: ``hi``, ``ta``, ``en``); each corpus
names its configs its own way. These functions are the resolvers ``${fleurs_config:${lang}}`` and
friends in ``conf/data/``; an unsupported code is an error that names ``lang`` and lists the choices.
Nothing here imports a heavy package: the resolvers run while Hydra composes the config.
"""

from __future__ import annotations

# The 102 FLEURS configs (google/fleurs), <language>_<region>.
FLEURS_CONFIGS = (
    "af_za am_et ar_eg as_in ast_es az_az be_by bg_bg bn_in bs_ba ca_es ceb_ph ckb_iq cmn_hans_cn cs_cz "
    "cy_gb da_dk de_de el_gr en_us es_419 et_ee fa_ir ff_sn fi_fi fil_ph fr_fr ga_ie gl_es gu_in ha_ng he_il "
    "hi_in hr_hr hu_hu hy_am id_id ig_ng is_is it_it ja_jp jv_id ka_ge kam_ke kea_cv kk_kz km_kh kn_in ko_kr "
    "ky_kg lb_lu lg_ug ln_cd lo_la lt_lt luo_ke lv_lv mi_nz mk_mk ml_in mn_mn mr_in ms_my mt_mt my_mm nb_no "
    "ne_np nl_nl nso_za ny_mw oc_fr om_et or_in pa_in pl_pl ps_af pt_br ro_ro ru_ru sd_in sk_sk sl_si sn_zw "
    "so_so sr_rs sv_se sw_ke ta_in te_in tg_tj th_th tr_tr uk_ua umb_ao ur_pk uz_uz vi_vn wo_sn xh_za yo_ng "
    "yue_hant_hk zu_za"
).split()
# Whisper codes whose FLEURS config does not start with the same code.
_FLEURS_ALIASES = {"zh": "cmn_hans_cn", "no": "nb_no", "tl": "fil_ph", "jw": "jv_id"}

# VoxPopuli's transcribed languages (facebook/voxpopuli configs; "en_accented" and "multilang" also exist).
VOXPOPULI_CONFIGS = "en de fr es pl it ro hu cs nl fi hr sk sl et lt".split()

# Multilingual LibriSpeech (facebook/multilingual_librispeech) names its configs by language name;
# its English part is a separate dataset.
MLS_CONFIGS = {
    "de": "german",
    "nl": "dutch",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "pl": "polish",
}

# Common Voice locales that carry a region where Whisper's code does not; every other code is its own name.
_COMMON_VOICE_ALIASES = {
    "zh": "zh-CN",
    "sv": "sv-SE",
    "pa": "pa-IN",
    "ga": "ga-IE",
    "hy": "hy-AM",
    "ne": "ne-NP",
    "nn": "nn-NO",
}


def _unsupported(lang: str, corpus: str, choices: list[str]) -> ValueError:
    return ValueError(f"lang={lang!r} is not a language of {corpus}; supported: {', '.join(sorted(choices))}")


def fleurs_config(lang: str) -> str:
    """FLEURS config for ``lang``: ``hi`` -> ``hi_in``, ``zh`` -> ``cmn_hans_cn``; a FLEURS name is kept."""
    if lang in FLEURS_CONFIGS:
        return lang
    by_code = {name.split("_")[0]: name for name in FLEURS_CONFIGS} | _FLEURS_ALIASES
    if lang not in by_code:
        raise _unsupported(lang, "FLEURS (google/fleurs)", list(by_code))
    return by_code[lang]


def voxpopuli_config(lang: str) -> str:
    """VoxPopuli config for ``lang`` (its configs are the language codes themselves)."""
    if lang not in VOXPOPULI_CONFIGS + ["en_accented", "multilang"]:
        raise _unsupported(lang, "VoxPopuli (facebook/voxpopuli)", VOXPOPULI_CONFIGS)
    return lang


def mls_config(lang: str) -> str:
    """Multilingual LibriSpeech config for ``lang``: ``de`` -> ``german``; a config name is kept."""
    if lang in MLS_CONFIGS.values():
        return lang
    if lang not in MLS_CONFIGS:
        raise _unsupported(lang, "Multilingual LibriSpeech (facebook/multilingual_librispeech)", list(MLS_CONFIGS))
    return MLS_CONFIGS[lang]


def common_voice_config(lang: str) -> str:
    """Common Voice locale for ``lang``: ``zh`` -> ``zh-CN``, ``sv`` -> ``sv-SE``; other codes unchanged."""
    return _COMMON_VOICE_ALIASES.get(lang, lang)


RESOLVERS = {
    "fleurs_config": fleurs_config,
    "voxpopuli_config": voxpopuli_config,
    "mls_config": mls_config,
    "common_voice_config": common_voice_config,
}
