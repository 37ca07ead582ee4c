"""The admin's editing of a mapping's chain (its targets, inline) and what a
blocked delete of a chain's provider or local model says."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import Model
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .local_state import has_model_folder
from .models import LocalModel, MappingTarget, Provider


class TargetForm(forms.ModelForm):
    position = forms.IntegerField(
        min_value=0, required=False, help_text="0 = primary; empty = at the end."
    )
    weight = forms.IntegerField(
        min_value=1, max_value=100, required=False, help_text="In a group: its share (empty: 1)."
    )

    class Meta:
        model = MappingTarget
        fields = ("position", "local_model", "provider", "upstream_model", "input_price",
                  "output_price", "group", "weight")  # fmt: skip

    def clean_weight(self) -> int:
        return self.cleaned_data.get("weight") or 1

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what ModelForm.clean returns, typed as never None
        local, provider = data.get("local_model"), data.get("provider")
        if local and provider:
            # On the fields, not the form: a field in error keeps the model's
            # own check (a database constraint, named in code) off the page.
            message = "Choose either a local model or a provider, not both."
            self.add_error("local_model", message)
            self.add_error("provider", message)
            return data
        if not local and not provider:
            if "local_model" not in self.errors and "provider" not in self.errors:
                self.add_error("local_model", "Choose either a local model or a provider.")
            return data
        if provider is not None and not provider.enabled:
            self.add_error("provider", f"Provider {provider.name!r} is disabled.")
        if local is not None:
            if not local.enabled:
                self.add_error("local_model", f"Local model {local.name!r} is disabled.")
            elif not has_model_folder(local):
                self.add_error(
                    "local_model",
                    f"Local model {local.name!r} is missing: no model at {local.resolved_path}.",
                )
            if data.get("upstream_model"):
                message = "Only provider targets take an upstream model name."
                self.add_error("upstream_model", message)
            for price in ("input_price", "output_price"):
                if data.get(price) is not None:
                    self.add_error(price, "A local target costs its local model's prices.")
        return data


def _identity(data: dict[str, Any]) -> tuple[object, ...]:
    return (data.get("local_model"), data.get("provider"), data.get("upstream_model") or "")


class TargetFormSet(forms.BaseInlineFormSet):
    """The chain's order is its positions, renumbered 0, 1, 2... on save.

    A position says where a target goes: type 0 to make one the primary, or
    another target's number to put it just before that one. A row whose
    position is left empty goes at the end.
    """

    def clean(self) -> None:
        super().clean()
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE", False)]
        if not kept:
            raise forms.ValidationError("A mapping needs at least one target (its primary).")
        seen: set[tuple[object, ...]] = set()
        for form in kept:
            identity = _identity(form.cleaned_data)
            if identity in seen:
                # A second try of the same deployment adds nothing but time:
                # retries on it are the provider's own setting.
                form.add_error(None, f"{form.instance} is already in this chain.")
            seen.add(identity)

        def rank(item: tuple[int, forms.ModelForm]) -> tuple[float, int, int]:
            index, form = item
            position = form.cleaned_data.get("position")
            if position is None:  # left empty: after the others
                return (float("inf"), 1, index)
            # Two at one number: the one just moved there goes first.
            return (position, 0 if "position" in form.changed_data else 1, index)

        for position, (_, form) in enumerate(sorted(enumerate(kept), key=rank)):
            form.cleaned_data["position"] = position
            form.instance.position = position

    def save(self, commit: bool = True) -> list[Any]:
        saved = super().save(commit)
        if commit:
            # A row whose fields were left as they were is skipped by the
            # formset, yet renumbering may have moved it: save its new place.
            deleted = set(map(id, self.deleted_forms))
            for form in self.initial_forms:
                moved = form.instance.position != form.initial.get("position")
                if id(form) not in deleted and not form.has_changed() and moved:
                    form.instance.save(update_fields=["position"])
        return saved


class TargetInline(admin.TabularInline):
    model = MappingTarget
    form = TargetForm
    formset = TargetFormSet
    extra = 1
    ordering = ("position", "id")


def describe_chain(targets: Sequence[MappingTarget]) -> str:
    """A chain on one line, a load-balanced group as its members in brackets at
    its first member's position: "a → [group g: b weight 2 | c] → d"."""
    parts: list[str] = []
    done: set[str] = set()
    for target in targets:
        if not target.group:
            parts.append(str(target))
        elif target.group not in done:
            done.add(target.group)
            members = [t for t in targets if t.group == target.group]
            shown = " | ".join(f"{t}" + (f" weight {t.weight}" * (t.weight != 1)) for t in members)
            parts.append(f"[group {target.group}: {shown}]")
    return " → ".join(parts)


def chains_using(objs: Sequence[Model]) -> list[SafeString]:
    """Where the providers or local models about to be deleted are still in a
    chain, as links to those mappings: what blocks the delete, by name."""
    providers = [o.pk for o in objs if isinstance(o, Provider)]
    locals_ = [o.pk for o in objs if isinstance(o, LocalModel)]
    targets = (
        MappingTarget.objects.filter(provider__in=providers)
        | MappingTarget.objects.filter(local_model__in=locals_)
    ).select_related("mapping", "provider", "local_model")
    return [
        format_html(
            'Backend mapping <a href="{}">{}</a>: {} {} ({})',
            reverse("admin:routing_backendmapping_change", args=[t.mapping_id]),
            t.mapping.pattern,
            "primary" if t.position == 0 else "fallback",
            t.position,
            t,
        )
        for t in targets.order_by("mapping__pattern", "position")
    ]


if TYPE_CHECKING:
    _AdminMixinBase = admin.ModelAdmin[Any]  # what the mixin's super() reaches
else:
    _AdminMixinBase = object


class NamesChainsOnBlockedDelete(_AdminMixinBase):
    """A ModelAdmin mixin: a delete blocked by chains names their mappings."""

    def get_deleted_objects(self, objs: Any, request: Any) -> Any:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if protected:
            # Django lists each protecting target by its str, which repeats
            # ("fake:<requested>" twice) and does not say which mapping.
            return deleted, counts, perms_needed, chains_using(list(objs))
        return deleted, counts, perms_needed, protected
