"""A VLAP-style linear map trained by assignment prediction (Park, Lee & Sohn, ICLR 2024).

VLAP ("Bridging Vision and Language Spaces with Assignment Prediction") maps image features into
a frozen LLM's word-embedding space with a single linear layer. Both modalities are assigned to
the LLM's word embeddings by optimal transport (Sinkhorn), over a batch, with the word
frequencies as the anchors' marginal; each modality then predicts the *other* modality's
assignment (a swapped prediction, as in SwAV, Caron et al. 2020), so that paired images and
texts must carry the same information about the anchors.

Here
----
* The linear layer ``x -> W x + b`` (d x d, initialised to the identity) maps images into the
  text space; texts are left as they are (they play the frozen LLM side).
* Anchors: VLAP's anchors are an LLM's word embeddings. gapviz has no LLM, so the anchors are
  ``n_anchors`` k-means centroids of the fitted texts (unit length, fixed during training), and
  their marginal in the transport problem is each centroid's share of the texts (the analogue of
  word frequency).
* Loss per batch of B pairs, with scores ``s = <z, anchor> / temperature`` and codes
  ``q = Sinkhorn(exp(<z, anchor> / epsilon))`` (rows sum to 1/B, columns to the anchor marginal):
  ``CE(q_text, softmax(s_image)) + CE(q_image, softmax(s_text))``. The text side is frozen, so
  the image codes are kept differentiable (no stop-gradient): otherwise the second term, the
  text predicting the image's assignment, would not train the layer at all.
* Not reproduced: VLAP's captioning objective (it needs the LLM), its LLM-sized vocabulary, and
  its scale (millions of pairs). This is a small, CPU-friendly, deterministic version: a few
  seconds at N = 2,500, d = 512, on one thread (:func:`gapviz.threads.one_thread`).
"""

from __future__ import annotations

import numpy as np

from ..threads import one_thread
from .base import GapMethod, Param, ProgressCallback, l2_normalize, require_finite


class VLAPGap(GapMethod):
    """One linear layer mapping images to the text space, trained by assignment prediction.

    The anchors differ from the paper's: VLAP assigns both modalities to a frozen LLM's word
    embeddings; here (no LLM) the anchors are ``n_anchors`` k-means centroids of the fitted
    texts, weighted by their share of the texts (see the module docstring).

    Parameters
    ----------
    n_anchors : int, default=256
        Anchors (k-means centroids of the fitted texts) the assignments are made over; at most N.
        VLAP assigns to a whole vocabulary: many anchors carry finer information than few.
    temperature : float, default=0.1
        Softmax temperature of the predictions.
    epsilon : float, default=0.05
        Entropic regularisation of the Sinkhorn assignment (as SwAV).
    sinkhorn_iters : int, default=3
        Sinkhorn iterations per batch (as SwAV).
    epochs : int, default=20
        Passes over the fitted pairs.
    batch_size : int, default=256
        Pairs per step (the assignment is balanced within a batch).
    lr : float, default=1e-3
        Adam learning rate.
    random_state : int, default=0
        Seed of k-means, batch order and everything else (the fit is deterministic).

    Attributes
    ----------
    weight_ : ndarray of shape (d, d)
        The layer's matrix; mapped image = ``normalize(x_n @ weight_.T + bias_)`` with
        ``x_n`` the L2-normalised input row.
    bias_ : ndarray of shape (d,)
    anchors_ : ndarray of shape (n_anchors, d)
    anchor_marginal_ : ndarray of shape (n_anchors,)
    loss_curve_ : list of float
        Mean loss per epoch.
    """

    name = "vlap"
    label = "VLAP linear map"
    menu_rank = 50
    params_info = (
        Param("n_anchors", "vlap: number of anchors (k-means centroids of the texts; default 256)",
              flag="--anchors", type=int, cap=lambda n, d: max(n, 2)),
        Param("epochs", "vlap: training epochs (default 20)", flag="--epochs", type=int),
        Param("lr", "vlap: Adam learning rate (default 1e-3)", flag="--lr", type=float),
        Param("temperature", "vlap: softmax temperature (default 0.1)", flag="--temperature",
              type=float),
        Param("random_state", "random seed (spectral, vlap: initialisation; ot, sinkhorn: their fit_size subsample; default 0)",
              flag="--seed", type=int, short="seed"),
    )
    summary = ("one linear layer trained by Sinkhorn assignment prediction (VLAP-style; anchors "
               "are k-means centroids of the texts, not an LLM's word embeddings)")
    uses_pairing = True
    default_protocol = "held-out"

    def __init__(self, n_anchors: int = 256, *, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iters: int = 3, epochs: int = 20, batch_size: int = 256,
                 lr: float = 1e-3, random_state: int = 0):
        self.n_anchors = n_anchors
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iters = sinkhorn_iters
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        for name in ("n_anchors", "sinkhorn_iters", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        if self.n_anchors < 2:
            raise ValueError(f"n_anchors must be >= 2 (an assignment needs a choice), got {self.n_anchors}.")
        if self.n_anchors > n_pairs:
            raise ValueError(f"n_anchors={self.n_anchors} exceeds the N={n_pairs} fitted texts they are "
                             f"centroids of; use n_anchors <= {n_pairs} or more pairs.")
        require_finite(self, "temperature", "epsilon", "lr")
        for name in ("temperature", "epsilon", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        import torch  # imported here: only this method needs it, and it is slow to import
        from sklearn.cluster import KMeans

        Xn, Yn = l2_normalize(X), l2_normalize(Y)
        n, d = Xn.shape
        progress(0.0, f"k-means: {self.n_anchors} anchors")
        with one_thread():
            km = KMeans(self.n_anchors, n_init=1, max_iter=100,
                        random_state=self.random_state).fit(Yn)
        # Empty clusters cannot happen with k-means++ on distinct points, but duplicated texts
        # could leave a centroid with no member: its marginal would be 0, which Sinkhorn
        # cannot match, so every anchor keeps a floor of one member.
        counts = np.bincount(km.labels_, minlength=self.n_anchors).astype(np.float64) + 1.0
        self.anchors_ = l2_normalize(km.cluster_centers_)
        self.anchor_marginal_ = counts / counts.sum()

        gen = torch.Generator().manual_seed(self.random_state)
        # fork_rng: seeding here must not change the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]), one_thread():
            torch.manual_seed(self.random_state)
            xt = torch.from_numpy(Xn)
            yt = torch.from_numpy(Yn)
            anchors = torch.from_numpy(self.anchors_)
            marg = torch.from_numpy(self.anchor_marginal_.astype(np.float32))
            layer = torch.nn.Linear(d, d)
            with torch.no_grad():
                layer.weight.copy_(torch.eye(d))
                layer.bias.zero_()
            opt = torch.optim.Adam(layer.parameters(), lr=self.lr)
            log_marg = torch.log(marg)
            self.loss_curve_ = []
            for epoch in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                total, batches = 0.0, 0
                for b0 in range(0, n, self.batch_size):
                    idx = order[b0:b0 + self.batch_size]
                    zi = torch.nn.functional.normalize(layer(xt[idx]), dim=1)
                    zt = yt[idx]
                    si, st = zi @ anchors.T, zt @ anchors.T
                    qi = _sinkhorn_codes(si / self.epsilon, log_marg, self.sinkhorn_iters)
                    with torch.no_grad():
                        qt = _sinkhorn_codes(st / self.epsilon, log_marg, self.sinkhorn_iters)
                    log_pi = torch.log_softmax(si / self.temperature, dim=1)
                    log_pt = torch.log_softmax(st / self.temperature, dim=1)
                    # Swapped prediction: each modality predicts the other's assignment.
                    loss = -(qt * log_pi).sum(1).mean() - (qi * log_pt).sum(1).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item()
                    batches += 1
                self.loss_curve_.append(total / batches)
                progress((epoch + 1) / self.epochs, f"epoch {epoch + 1}/{self.epochs}, "
                                                    f"loss {self.loss_curve_[-1]:.4f}")
            self.weight_ = layer.weight.detach().numpy().copy()
            self.bias_ = layer.bias.detach().numpy().copy()

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize(l2_normalize(X) @ self.weight_.T + self.bias_)

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return l2_normalize(Y)


def _sinkhorn_codes(logits, log_marginal, n_iter: int):
    """Balanced soft assignment of a batch to anchors (SwAV's Sinkhorn-Knopp, in log space).

    Parameters
    ----------
    logits : torch.Tensor of shape (B, K)
        Similarities divided by epsilon.
    log_marginal : torch.Tensor of shape (K,)
        Log of the anchors' share of the batch (sums to 1).

    Returns
    -------
    torch.Tensor of shape (B, K)
        Each row sums to 1 (a distribution over anchors); columns sum to about
        ``B * marginal`` after ``n_iter`` alternating normalisations.
    """
    import torch

    b = logits.shape[0]
    log_q = logits - logits.max()
    for _ in range(n_iter):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) + log_marginal[None, :]
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - np.log(b)
    return torch.exp(log_q) * b
