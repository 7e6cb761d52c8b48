//! Hugging Face tensor names → canonical (GGUF-style) names.

use super::Recipe;

/// `None` for tensors the recipes do not use (vision towers, rotary buffers).
pub fn canonical(recipe: &Recipe, hf: &str) -> Option<String> {
    // Multimodal Gemma 3 checkpoints nest the text model.
    let name = hf
        .strip_prefix("language_model.")
        .or_else(|| hf.strip_prefix("model.language_model."))
        .map(|s| {
            if s.starts_with("model.") || s.starts_with("lm_head") {
                s.to_string()
            } else {
                format!("model.{s}")
            }
        })
        .unwrap_or_else(|| hf.to_string());
    match name.as_str() {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let role = match (tail, recipe.post_norms) {
        ("input_layernorm.weight", _) => "attn_norm",
        ("self_attn.q_proj.weight", _) => "attn_q",
        ("self_attn.k_proj.weight", _) => "attn_k",
        ("self_attn.v_proj.weight", _) => "attn_v",
        ("self_attn.o_proj.weight", _) => "attn_output",
        ("self_attn.q_norm.weight", _) => "attn_q_norm",
        ("self_attn.k_norm.weight", _) => "attn_k_norm",
        ("mlp.gate_proj.weight", _) => "ffn_gate",
        ("mlp.up_proj.weight", _) => "ffn_up",
        ("mlp.down_proj.weight", _) => "ffn_down",
        // With post-norms (Gemma) this HF name is the post-attention norm,
        // which scales the attention output; without (Qwen 3, Llama) the
        // same name is the pre-MLP norm.
        ("post_attention_layernorm.weight", true) => "post_attention_norm",
        ("post_attention_layernorm.weight", false) => "ffn_norm",
        ("pre_feedforward_layernorm.weight", true) => "ffn_norm",
        ("post_feedforward_layernorm.weight", true) => "post_ffw_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{role}.weight"))
}
