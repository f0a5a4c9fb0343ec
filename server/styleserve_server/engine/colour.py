"""Colour preservation: luminance-only transfer that keeps the content's chroma.

With ``preserve_color`` the optimised variable is a single luminance channel; the network sees
it as a grey picture, the style pictures become grey too (their luminance matched to the
content's mean and spread, as Gatys et al. propose), and the output takes its chroma from the
content. Without it every function here is the identity.
"""

from __future__ import annotations

from torch import Tensor

from styleserve_server.engine.imaging import chroma, luminance, recombine

__all__ = ["Colour"]


class Colour:
    """What the optimiser, the network and the output see, for one stage's ``content``."""

    def __init__(self, content: Tensor, *, preserve: bool) -> None:
        self.preserve = preserve
        if preserve:
            y = luminance(content)
            self._chroma = chroma(content)
            self._mean, self._std = y.mean(), y.std()

    def variable(self, rgb: Tensor) -> Tensor:
        """The optimised variable that starts from the RGB picture ``rgb``."""
        return luminance(rgb) if self.preserve else rgb.clone()

    def render(self, x: Tensor) -> Tensor:
        """The RGB picture the network sees for the variable ``x``."""
        return x.expand(-1, 3, -1, -1) if self.preserve else x

    def style(self, rgb: Tensor) -> Tensor:
        """A style picture as the network should see it."""
        if not self.preserve:
            return rgb
        y = luminance(rgb)
        matched = (y - y.mean()) / y.std().clamp_min(1e-6) * self._std + self._mean
        return self.render(matched)

    def output(self, x: Tensor) -> Tensor:
        """The RGB result for the variable ``x``."""
        return recombine(x, self._chroma) if self.preserve else x
