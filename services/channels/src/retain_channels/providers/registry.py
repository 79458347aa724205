"""(channel, provider name) -> adapter class + config model; builds one instance per channel."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from retain_kit.enums import CHANNELS

from retain_channels.providers.base import Provider, ProviderContext

ProviderFactory = Callable[[Any, ProviderContext], Provider]


@dataclass(frozen=True)
class ProviderSpec:
    factory: ProviderFactory
    config_model: type[BaseModel]


class ProviderRegistry:
    """Which adapters exist. Each service (and each test) owns its registry instance."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], ProviderSpec | Callable[[], ProviderSpec]] = {}

    def register(
        self, channels: str | Iterable[str], name: str, factory: ProviderFactory, config_model: type[BaseModel]
    ) -> None:
        self._add(channels, name, ProviderSpec(factory, config_model))

    def register_module(
        self, channels: str | Iterable[str], name: str, module: str, *, factory: str, config: str
    ) -> None:
        """Like `register`, but the adapter's module is imported only when a channel selects it: the
        vendor SDKs take seconds to import, which a restarting dispatcher should not pay for nothing."""

        def load() -> ProviderSpec:
            loaded = importlib.import_module(module)
            return ProviderSpec(getattr(loaded, factory), getattr(loaded, config))

        self._add(channels, name, load)

    def _add(
        self, channels: str | Iterable[str], name: str, spec: ProviderSpec | Callable[[], ProviderSpec]
    ) -> None:
        for channel in [channels] if isinstance(channels, str) else channels:
            if channel not in CHANNELS:
                raise ValueError(f"unknown channel {channel!r}")
            self._specs[(channel, name)] = spec

    def spec(self, channel: str, name: str) -> ProviderSpec:
        try:
            spec = self._specs[(channel, name)]
        except KeyError:
            known = sorted(n for c, n in self._specs if c == channel)
            raise ValueError(f"no provider {name!r} for channel {channel!r}; known: {', '.join(known)}") from None
        if not isinstance(spec, ProviderSpec):
            spec = self._specs[(channel, name)] = spec()
        return spec

    def build(self, channel: str, name: str, config: Mapping[str, Any], ctx: ProviderContext) -> Provider:
        spec = self.spec(channel, name)
        try:
            parsed = spec.config_model.model_validate(dict(config))
        except ValidationError as exc:
            raise ValueError(f"invalid config for provider {name!r} on {channel!r}: {exc}") from exc
        return spec.factory(parsed, ctx)


def default_registry() -> ProviderRegistry:
    """Every adapter we ship. Only `log` is selected unless settings name another per channel."""
    from retain_channels.providers.log.sink import LogConfig, LogProvider

    base = "retain_channels.providers"
    registry = ProviderRegistry()
    registry.register(CHANNELS, "log", LogProvider, LogConfig)
    registry.register_module("email", "smtp", f"{base}.email.smtp", factory="SmtpProvider", config="SmtpConfig")
    registry.register_module("sms", "twilio", f"{base}.sms.twilio", factory="TwilioSmsProvider",
                             config="TwilioConfig")
    registry.register_module("line", "line", f"{base}.line.messaging_api", factory="LineMessagingProvider",
                             config="LineConfig")
    registry.register_module("push", "webpush", f"{base}.push.webpush", factory="WebPushProvider",
                             config="WebPushConfig")
    return registry


@dataclass
class ChannelProviders:
    """The configured provider instance per channel, with the name it was registered under."""

    instances: dict[str, tuple[str, Provider]]

    def for_channel(self, channel: str) -> tuple[str, Provider]:
        try:
            return self.instances[channel]
        except KeyError:
            raise LookupError(f"no provider configured for channel {channel!r}") from None

    def by_name(self, name: str) -> list[Provider]:
        return [provider for n, provider in self.instances.values() if n == name]

    async def close(self) -> None:
        for _, provider in self.instances.values():
            await provider.close()


def build_providers(
    registry: ProviderRegistry,
    *,
    names: Mapping[str, str],
    configs: Mapping[str, Mapping[str, Any]],
    context: Callable[[str], ProviderContext],
) -> ChannelProviders:
    """One fresh instance per channel; `names` defaults every channel to the `log` provider."""
    unknown = set(names) - set(CHANNELS)
    if unknown:
        raise ValueError(f"providers configured for unknown channels: {', '.join(sorted(unknown))}")
    instances: dict[str, tuple[str, Provider]] = {}
    for channel in CHANNELS:
        name = names.get(channel, "log")
        instances[channel] = (name, registry.build(channel, name, configs.get(channel, {}), context(channel)))
    return ChannelProviders(instances)
