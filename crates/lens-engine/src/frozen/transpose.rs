//! The transpose of a frozen block: its MLP and attention modules applied
//! to chunks of cotangents (the transpose pass's inner loop).

use super::{map_group, Cotangents, FrozenLayer, Workspace};
use crate::backend::{scratch, Backend, Batch, Epilogue, MatView};
use crate::error::Result;
use candle_core::{Device, Tensor};

impl<B: Backend> FrozenLayer<B> {
    /// Transpose of the MLP module (plus its residual when `residual`) on
    /// every chunk of cotangents (all on the same last `m` positions).
    /// `compose`: form each position's map `C_p = W̃down diag(g̃_p) W̃up`
    /// once (`2·d²·ffn`) and apply it to every chunk (`2·k·d²`), which pays
    /// when `k` is large; otherwise apply the factors (`4·k·d·ffn`).
    pub fn mlp_transpose(
        &self,
        be: &B,
        chunks: &mut [Cotangents<B>],
        residual: bool,
        compose: bool,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let (n, d, ffn) = (self.n, self.d, self.ffn);
        let Some(m) = chunks.first().map(|c| c.m) else {
            return Ok(());
        };
        // Both forms write whole blocks: the residual path is an addend of
        // their last product (or, composed, the identity of `I + C_p`).
        let mut outs = Vec::with_capacity(chunks.len());
        for c in chunks.iter() {
            outs.push(ws.take(be, m * c.k * d)?);
        }
        let up = MatView::dense(0, ffn, d);
        let down = MatView::dense(0, d, ffn);
        let bytes = be.dtype().size_in_bytes();
        let group = map_group(d, ffn, bytes, m);
        if compose {
            for p0 in (0..m).step_by(group) {
                let q = group.min(m - p0);
                let maps = scratch(be, &mut ws.map, q * d * d)?;
                let dd = MatView::dense(0, d, d);
                // C_p = I + W̃down diag(g̃_p) W̃up for each position of the group.
                let eye = if residual {
                    Some(match &ws.eye {
                        Some(e) => e,
                        None => {
                            ws.eye
                                .insert(be.upload(&Tensor::eye(d, be.dtype(), &Device::Cpu)?)?)
                        }
                    })
                } else {
                    None
                };
                let ep = Epilogue {
                    scale: Some((&self.g_tilde, (n - m + p0) * ffn, ffn)),
                    addend: eye.map(|e| (e, dd, 0)),
                };
                let batch = Batch {
                    count: q,
                    dst: d * d,
                    a: 0,
                    b: 0,
                };
                be.gemm_fused(
                    maps,
                    dd,
                    &self.w_down,
                    down,
                    &self.w_up,
                    up,
                    batch,
                    ep,
                    &mut ws.scaled,
                )?;
                let maps = &*maps;
                for (c, out) in chunks.iter().zip(outs.iter_mut()) {
                    let block = MatView::dense(p0 * c.k * d, c.k, d);
                    let batch = Batch {
                        count: q,
                        dst: c.k * d,
                        a: c.k * d,
                        b: d * d,
                    };
                    be.gemm(out, block, &c.buf, block, maps, dd, batch, false)?;
                }
            }
        } else {
            for (c, out) in chunks.iter().zip(outs.iter_mut()) {
                let (rows, k) = (m * c.k, c.k);
                let u = scratch(be, &mut ws.through, rows * ffn)?;
                be.gemm(
                    u,
                    MatView::dense(0, rows, ffn),
                    &c.buf,
                    MatView::dense(0, rows, d),
                    &self.w_down,
                    down,
                    Batch::ONE,
                    false,
                )?;
                // Position by position: (G W̃down)_p diag(g̃_p) W̃up (+ G_p).
                let block = MatView::dense(0, k, d);
                let ep = Epilogue {
                    scale: Some((&self.g_tilde, (n - m) * ffn, ffn)),
                    addend: residual.then_some((&c.buf, block, k * d)),
                };
                let batch = Batch {
                    count: m,
                    dst: k * d,
                    a: k * ffn,
                    b: 0,
                };
                let u = &*u;
                be.gemm_fused(
                    out,
                    block,
                    u,
                    MatView::dense(0, k, ffn),
                    &self.w_up,
                    up,
                    batch,
                    ep,
                    &mut ws.scaled,
                )?;
            }
        }
        for (c, out) in chunks.iter_mut().zip(outs) {
            ws.give(std::mem::replace(&mut c.buf, out));
        }
        Ok(())
    }

    /// Transpose of the attention module (plus its residual when `residual`):
    /// cotangents on the last `m` (query) positions → on all `n`.
    pub fn attn_transpose(
        &self,
        be: &B,
        c: &mut Cotangents<B>,
        residual: bool,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let (n, d, hd, g) = (self.n, self.d, self.head_dim, self.group());
        let (m, k) = (c.m, c.k);
        let hw = self.heads * hd;
        let mut out = ws.take(be, n * k * d)?;
        // Per head: G·W̃o[:, head], each head's block contiguous: [heads, m·k, hd].
        let gm = scratch(be, &mut ws.gm, self.heads * m * k * hd)?;
        let batch = Batch {
            count: self.heads,
            dst: m * k * hd,
            a: 0,
            b: hd,
        };
        let wo_head = MatView::dense(0, d, hw).cols(0, hd);
        be.gemm(
            gm,
            MatView::dense(0, m * k, hd),
            &c.buf,
            MatView::dense(0, m * k, d),
            &self.wo,
            wo_head,
            batch,
            false,
        )?;
        // Pᵀ over the query rows n-m.., summed over the heads sharing a kv
        // head: [kv, n, k·hd].
        let gv = scratch(be, &mut ws.gv, self.kv_heads * n * k * hd)?;
        if m == n {
            // One product per kv head over (head, query) pairs, every kv
            // head in one batch: each output element is written once
            // instead of once per head.
            let batch = Batch {
                count: self.kv_heads,
                dst: n * k * hd,
                a: n * g * n,
                b: g * n * k * hd,
            };
            let pt = MatView::dense(0, n, g * n);
            let heads = MatView::dense(0, g * n, k * hd);
            let dst = MatView::dense(0, n, k * hd);
            be.gemm(gv, dst, &self.p_t, pt, gm, heads, batch, false)?;
        } else {
            for kv in 0..self.kv_heads {
                let h0 = kv * g;
                let dst = MatView::dense(kv * n * k * hd, n, k * hd);
                let pt = MatView {
                    offset: h0 * n * n + (n - m) * n,
                    rows: n,
                    cols: m,
                    rs: 1,
                    cs: n,
                };
                let batch = Batch {
                    count: g,
                    dst: 0,
                    a: n * n,
                    b: m * k * hd,
                };
                let heads = MatView::dense(h0 * m * k * hd, m, k * hd);
                be.gemm(gv, dst, &self.p_hat, pt, gm, heads, batch, false)?;
            }
        }
        // Back to the residual: Σ_kv Gv_kv W̃v_kv, the residual path (on the
        // last m positions) added inside the product.
        let batch = Batch {
            count: self.kv_heads,
            dst: 0,
            a: n * k * hd,
            b: hd * d,
        };
        let gv = &*gv;
        let rows = MatView::dense(0, n * k, d);
        let from = MatView::dense(0, n * k, hd);
        let wv = MatView::dense(0, hd, d);
        let split = if residual { (n - m) * k } else { n * k };
        let mut none = None;
        if split > 0 {
            let (dv, gvv) = (rows.rows(0, split), from.rows(0, split));
            be.gemm_fused(
                &mut out,
                dv,
                gv,
                gvv,
                &self.wv,
                wv,
                batch,
                Epilogue::NONE,
                &mut none,
            )?;
        }
        if split < n * k {
            let rest = n * k - split;
            let ep = Epilogue {
                scale: None,
                addend: Some((&c.buf, MatView::dense(0, rest, d), 0)),
            };
            let (dv, gvv) = (rows.rows(split, rest), from.rows(split, rest));
            be.gemm_fused(&mut out, dv, gv, gvv, &self.wv, wv, batch, ep, &mut none)?;
        }
        ws.give(std::mem::replace(&mut c.buf, out));
        c.m = n;
        Ok(())
    }
}
