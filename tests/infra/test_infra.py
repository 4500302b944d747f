"""Policy tests for infra/: what can be checked without a Bicep compiler.

Every .bicep file is parsed with pycep-parser; the policy checks below read the parsed templates (hardening,
the exact role set and scopes, app settings against shared/runtime/settings.py, outputs). Each check is a function
returning a list of problems, so the mutation tests at the end can prove that each one fails on a template
weakened in a temporary copy. checkov runs from its own venv (.venv-infra, see requirements-infra.txt).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from lark.exceptions import UnexpectedInput
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CHECKOV = ROOT / ".venv-infra" / "bin" / "checkov"
CHECKOV_CONFIG = INFRA / ".checkov.yaml"
INSTALL_HINT = "python3.11 -m venv .venv-infra && .venv-infra/bin/pip install -r requirements-infra.txt"

# Built-in role definition ids (platform-facts.md).
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
STORAGE_TABLE_DATA_READER = "76199698-9eea-4c19-bc75-cec21354c6b6"
# Issue 14 (production-behaviour.md, queue fan-out): trigger = Reader + Message Processor; output = Message Sender.
STORAGE_QUEUE_DATA_READER = "19e7f393-937e-4f77-808e-94535e297925"
STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR = "8a0f0c08-91a1-4084-bc3d-661d67233fed"
STORAGE_QUEUE_DATA_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"

WORKSPACE = "Microsoft.OperationalInsights/workspaces"
STORAGE = "Microsoft.Storage/storageAccounts"
APP_INSIGHTS = "Microsoft.Insights/components"
VAULT = "Microsoft.KeyVault/vaults"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"

# What the app's identity gets, and where: nothing else, nowhere else.
APP_ROLES = {
    (LOG_ANALYTICS_READER, WORKSPACE),
    (STORAGE_BLOB_DATA_OWNER, STORAGE),
    (STORAGE_TABLE_DATA_CONTRIBUTOR, STORAGE),
    (MONITORING_METRICS_PUBLISHER, APP_INSIGHTS),
    (KEY_VAULT_SECRETS_USER, VAULT),
    (STORAGE_QUEUE_DATA_READER, STORAGE),
    (STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR, STORAGE),
    (STORAGE_QUEUE_DATA_MESSAGE_SENDER, STORAGE),
}
# Only when the deployer asks for it (grantDeployerAccess).
DEPLOYER_ROLES = {
    (KEY_VAULT_SECRETS_OFFICER, VAULT),
    (STORAGE_TABLE_DATA_READER, STORAGE),
}
# Never, for anyone: broad or privilege-granting roles, and Queue Data Contributor (the three narrow queue roles do).
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "92aaf0da-9dab-42b6-94a3-d43ce8d16293": "Log Analytics Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
}

# App settings Flex Consumption rejects or ignores (runtime lives in functionAppConfig).
FLEX_FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "WEBSITE_RUN_FROM_PACKAGE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_TIME_ZONE",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_VNET_ROUTE_ALL",
    "AzureWebJobsStorage",  # a connection string (with a key); identity settings use AzureWebJobsStorage__*
}
FLEX_FORBIDDEN_PREFIXES = ("WEBSITE_CONTENT",)
FLEX_FORBIDDEN_SITE_CONFIG = {
    "linuxFxVersion",
    "alwaysOn",
    "use32BitWorkerProcess",
    "functionAppScaleLimit",
    "minimumElasticInstanceCount",
    "preWarmedInstanceCount",
    "pythonVersion",
}

# Seed-rule parameters the deployment must set (rules/*.yaml `let` bindings, KQLWATCH_PARAM_<Name>).
SEED_RULE_PARAMS = {"SenderDomains", "TriggerResults"}

Problems = list[str]


# ---------------------------------------------------------------------------------------------------------
# Parsed templates
# ---------------------------------------------------------------------------------------------------------


class BicepSyntaxError(AssertionError):
    """A .bicep file pycep cannot parse; the message reads path:line:column: reason."""


def parse_bicep(path: Path) -> dict[str, Any]:
    try:
        result = BicepParser().parse(file_path=path)
    except UnexpectedInput as exc:
        reason = str(exc).splitlines()[0]
        raise BicepSyntaxError(f"{path}:{exc.line}:{exc.column}: {reason}") from None
    if not isinstance(result, dict):
        raise BicepSyntaxError(f"{path}: pycep returned no template")
    return dict(result)


def render(node: Any) -> str:
    """A compact, stable text form of a pycep expression: guid(storage.id, identity.id, roleId)."""
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, (int, float, str)):
        return str(node)
    if isinstance(node, list):
        return "[" + ", ".join(render(item) for item in node) + "]"
    if isinstance(node, dict):
        if set(node) == {"function"}:
            fn = node["function"]
            args = [render(value) for value in fn.get("parameters", {}).values() if value is not None]
            return f"{fn['type']}({', '.join(args)})"
        if set(node) == {"operator"}:
            op = node["operator"]
            operands = [render(value) for value in op.get("operands", {}).values()]
            if op["type"] == "property_accessor":
                return ".".join(operands)
            if op["type"] == "index_accessor":
                return f"{operands[0]}[{operands[1]}]"
            return f"{op['type']}({', '.join(operands)})"
        return "{" + ", ".join(f"{key.strip(chr(39))}: {render(value)}" for key, value in node.items()) + "}"
    return repr(node)


@dataclass(frozen=True)
class Resource:
    symbol: str
    type: str
    api_version: str
    existing: bool
    condition: str | None
    config: dict[str, Any]

    @property
    def properties(self) -> dict[str, Any]:
        props = self.config.get("properties") or {}
        return props if isinstance(props, dict) else {}


@dataclass(frozen=True)
class Template:
    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.relative_to(INFRA).as_posix() if self.path.is_relative_to(INFRA) else self.path.name

    def resources(self, type_: str | None = None) -> list[Resource]:
        found = []
        for symbol, body in (self.data.get("resources") or {}).items():
            config = body.get("config") or {}
            condition = None
            if set(config) == {"condition", "config"}:  # resource x '...' = if (cond) { ... }
                condition, config = render(config["condition"]), config["config"]
            if type_ is None or body["type"] == type_:
                found.append(
                    Resource(
                        symbol,
                        body["type"],
                        body["api_version"],
                        bool(body.get("existing")),
                        condition,
                        config,
                    )
                )
        return found

    def resource(self, symbol: str) -> Resource | None:
        return next((r for r in self.resources() if r.symbol == symbol), None)

    def one(self, type_: str) -> Resource:
        matches = [r for r in self.resources(type_) if not r.existing]
        assert len(matches) == 1, f"{self.name}: expected one {type_}, found {[r.symbol for r in matches]}"
        return matches[0]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.data.get("parameters") or {})

    @property
    def variables(self) -> dict[str, Any]:
        return {name: body.get("value") for name, body in (self.data.get("variables") or {}).items()}

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.data.get("outputs") or {})

    @property
    def modules(self) -> dict[str, Any]:
        return dict(self.data.get("modules") or {})

    def module(self, symbol: str) -> tuple[str, str | None, dict[str, Any]]:
        """(path, condition, config) of a module; config holds name, scope and params."""
        body = self.modules.get(symbol) or {}
        config = body.get("config") or {}
        condition = None
        if set(config) == {"condition", "config"}:
            condition, config = render(config["condition"]), config["config"]
        return (body.get("detail") or {}).get("path", ""), condition, config

    def resolve(self, node: Any) -> str:
        """Render, replacing a bare variable name by its literal value (role ids live in variables)."""
        text = render(node)
        value = self.variables.get(text)
        return value if isinstance(value, str) else text

    def is_secure_param(self, name: str) -> bool:
        body = self.params.get(name) or {}
        return any(d.get("type") == "secure" for d in body.get("decorators") or [])


def load(path: Path) -> Template:
    return Template(path, parse_bicep(path))


def bicep_files(root: Path = INFRA) -> list[Path]:
    return sorted(root.rglob("*.bicep"))


@pytest.fixture(scope="module")
def main() -> Template:
    return load(INFRA / "main.bicep")


@pytest.fixture(scope="module")
def res() -> Template:
    return load(INFRA / "resources.bicep")


@pytest.fixture(scope="module")
def reader() -> Template:
    return load(INFRA / "modules" / "workspace-reader.bicep")


def _import(name: str) -> ModuleType:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def settings() -> ModuleType:
    return _import("shared.runtime.settings")


# ---------------------------------------------------------------------------------------------------------
# Checks (each returns its problems; empty means the template passes)
# ---------------------------------------------------------------------------------------------------------


def check_storage_hardening(t: Template) -> Problems:
    props = t.one(STORAGE).properties
    expected = {
        "allowSharedKeyAccess": False,
        "allowBlobPublicAccess": False,
        "minimumTlsVersion": "TLS1_2",
        "supportsHttpsTrafficOnly": True,
        "defaultToOAuthAuthentication": True,
        "allowCrossTenantReplication": False,
    }
    problems = [
        f"storage {key} is {props.get(key)!r}, must be {want!r}"
        for key, want in expected.items()
        if props.get(key) != want
    ]
    for container in t.resources("Microsoft.Storage/storageAccounts/blobServices/containers"):
        if container.properties.get("publicAccess", "None") != "None":
            problems.append(f"container {container.symbol} allows public access")
    return problems


def check_site_hardening(t: Template) -> Problems:
    site = t.one("Microsoft.Web/sites")
    props, config = site.properties, site.properties.get("siteConfig") or {}
    problems = []
    if props.get("httpsOnly") is not True:
        problems.append(f"site httpsOnly is {props.get('httpsOnly')!r}")
    for key, want in {"ftpsState": "Disabled", "minTlsVersion": "1.2", "scmMinTlsVersion": "1.2"}.items():
        if config.get(key) != want:
            problems.append(f"siteConfig.{key} is {config.get(key)!r}, must be {want!r}")
    policies = {r.config.get("name"): r for r in t.resources("Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
    for name in ("ftp", "scm"):
        policy = policies.get(name)
        if policy is None or policy.properties.get("allow") is not False or policy.condition is not None:
            problems.append(f"basic publishing credentials ({name}) must be disabled unconditionally")
    return problems


def check_flex_consumption(t: Template) -> Problems:
    problems = []
    plan = t.one("Microsoft.Web/serverfarms")
    sku = plan.config.get("sku") or {}
    if (sku.get("name"), sku.get("tier")) != ("FC1", "FlexConsumption") or plan.properties.get("reserved") is not True:
        problems.append(f"plan must be FC1/FlexConsumption with reserved: true, got {sku} {plan.properties}")
    site = t.one("Microsoft.Web/sites")
    if site.config.get("kind") != "functionapp,linux":
        problems.append(f"site kind is {site.config.get('kind')!r}")
    fac = site.properties.get("functionAppConfig") or {}
    runtime = fac.get("runtime") or {}
    if (t.resolve(runtime.get("name")), t.resolve(runtime.get("version"))) != ("python", "3.11"):
        problems.append(f"functionAppConfig.runtime must be python 3.11, got {runtime}")
    storage = (fac.get("deployment") or {}).get("storage") or {}
    auth = storage.get("authentication") or {}
    if storage.get("type") != "blobContainer":
        problems.append("deployment package must live in a blob container")
    if (
        auth.get("type") != "UserAssignedIdentity"
        or render(auth.get("userAssignedIdentityResourceId")) != "identity.id"
    ):
        problems.append(f"deployment storage must authenticate with the user-assigned identity, got {auth}")
    settings = app_settings(t)
    for name in settings:
        if name in FLEX_FORBIDDEN_SETTINGS or name.startswith(FLEX_FORBIDDEN_PREFIXES):
            problems.append(f"app setting {name} is not allowed on Flex Consumption")
    bad_config = FLEX_FORBIDDEN_SITE_CONFIG & set(site.properties.get("siteConfig") or {})
    problems += [f"siteConfig.{key} is not allowed on Flex Consumption" for key in sorted(bad_config)]
    return problems


def check_identity_only(t: Template) -> Problems:
    """One user-assigned identity for everything; no keys or connection strings with secrets."""
    problems = []
    site = t.one("Microsoft.Web/sites")
    ident = site.config.get("identity") or {}
    assigned = [key.strip("'") for key in (ident.get("userAssignedIdentities") or {})]
    if ident.get("type") != "UserAssigned" or assigned != ["${identity.id}"]:
        problems.append(f"site identity must be exactly the user-assigned identity, got {ident}")
    if render(site.properties.get("keyVaultReferenceIdentity")) != "identity.id":
        problems.append("keyVaultReferenceIdentity must be the user-assigned identity")
    settings = app_settings(t)
    expected = {
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "identity.properties.clientId",
        "AZURE_CLIENT_ID": "identity.properties.clientId",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": ("ClientId=${identity.properties.clientId};Authorization=AAD"),
    }
    for name, want in expected.items():
        if settings.get(name) != want:
            problems.append(f"app setting {name} is {settings.get(name)!r}, must be {want!r}")
    if "AzureWebJobsStorage__blobServiceUri" not in settings:
        problems.append("AzureWebJobsStorage__blobServiceUri is missing (identity-based host storage)")
    if "AzureWebJobsStorage__queueServiceUri" in settings:
        problems.append(
            "AzureWebJobsStorage__queueServiceUri is set: the host's own storage needs no queues (the run queues have "
            "their own connection, KQLWATCH_QUEUE_CONNECTION)"
        )
    source = t.path.read_text(encoding="utf-8")
    for marker in ("listKeys", "listSecrets", "AccountKey=", "InstrumentationKey=", "SharedAccessSignature"):
        if marker in source:
            problems.append(f"{t.name} uses {marker}: keys are not allowed")
    return problems


def check_telemetry(t: Template) -> Problems:
    problems = []
    ai = t.one(APP_INSIGHTS)
    if ai.properties.get("DisableLocalAuth") is not True:
        problems.append("Application Insights must disable local auth (Entra ingestion only)")
    if render(ai.properties.get("WorkspaceResourceId")) != f"{t.one(WORKSPACE).symbol}.id":
        problems.append("Application Insights must be workspace-based on the telemetry workspace")
    if ((t.one(WORKSPACE).properties.get("features") or {}).get("disableLocalAuth")) is not True:
        problems.append("the telemetry workspace must disable local auth")
    return problems


def check_key_vault(t: Template) -> Problems:
    problems = []
    vault = t.one(VAULT)
    for key in ("enableRbacAuthorization", "enablePurgeProtection", "enableSoftDelete"):
        if vault.properties.get(key) is not True:
            problems.append(f"Key Vault {key} is {vault.properties.get(key)!r}, must be true")
    if vault.properties.get("accessPolicies"):
        problems.append("Key Vault uses access policies; RBAC only")
    secrets = {s.symbol: s for s in t.resources("Microsoft.KeyVault/vaults/secrets")}
    if set(secrets) != {"webhookSecret", "opsWebhookSecret"}:
        return [*problems, f"expected the webhook and ops-webhook secrets, found {sorted(secrets)}"]
    value = render(secrets["webhookSecret"].properties.get("value"))
    if not t.is_secure_param(value):
        problems.append(f"the secret's value {value!r} must be a @secure() parameter")
    ops_value = render(secrets["opsWebhookSecret"].properties.get("value"))
    if not any(t.is_secure_param(w) for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", ops_value)):
        problems.append(f"the ops secret's value {ops_value!r} must come from a @secure() parameter")
    for setting, symbol, template in (
        ("KQLWATCH_TEAMS_WEBHOOK_URL", "webhookSecret", "{ref}"),
        ("KQLWATCH_OPS_WEBHOOK_URL", "opsWebhookSecret", "conditional(empty(opsWebhookUrl), , {ref})"),
    ):
        reference = app_settings(t).get(setting, "")
        secret_uri = f"${{{vault.symbol}.properties.vaultUri}}secrets/${{{symbol}.name}}/"
        want = template.format(ref=f"@Microsoft.KeyVault(SecretUri={secret_uri})")
        if reference != want:
            problems.append(f"{setting} must be the Key Vault reference {want!r}, got {reference!r}")
    return problems


def check_no_secret_outputs(t: Template) -> Problems:
    problems = []
    secure = {name for name in t.params if t.is_secure_param(name)}
    for name, body in t.outputs.items():
        text = render(body.get("value"))
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
        leaked = words & secure
        if leaked:
            problems.append(f"{t.name}: output {name} exposes secure parameter(s) {sorted(leaked)}")
        if re.search(r"(?i)connectionstring|instrumentationkey|listkeys|listsecrets|secret|password|webhook", text):
            problems.append(f"{t.name}: output {name} = {text} looks secret")
        if any(d.get("type") == "secure" for d in body.get("decorators") or []):
            problems.append(f"{t.name}: output {name} is @secure(); outputs must not carry secrets at all")
    for name in t.params:
        if re.search(r"(?i)webhook|secret|password|token", name) and not t.is_secure_param(name):
            problems.append(f"{t.name}: parameter {name} looks secret but is not @secure()")
    return problems


@dataclass(frozen=True)
class RoleAssignment:
    where: str
    symbol: str
    role_id: str
    scope_type: str
    scope_symbol: str
    principal: str
    principal_type: str
    name: str
    condition: str | None


def role_assignments(t: Template) -> list[RoleAssignment]:
    found = []
    for ra in t.resources(ROLE_ASSIGNMENT):
        role_ref = ra.properties.get("roleDefinitionId") or {}
        fn = role_ref.get("function") if isinstance(role_ref, dict) else None
        if fn and fn.get("type") == "subscription_resource_id":
            role_id = t.resolve(fn["parameters"].get("resource_name_1"))
        else:
            role_id = t.resolve(role_ref)
        scope_symbol = render(ra.config.get("scope"))
        scope = t.resource(scope_symbol)
        found.append(
            RoleAssignment(
                where=t.name,
                symbol=ra.symbol,
                role_id=role_id.lower(),
                scope_type=scope.type if scope else f"<unknown scope {scope_symbol}>",
                scope_symbol=scope_symbol,
                principal=render(ra.properties.get("principalId")),
                principal_type=t.resolve(ra.properties.get("principalType")),
                name=render(ra.config.get("name")),
                condition=ra.condition,
            )
        )
    return found


def check_roles(res_t: Template, reader_t: Template, main_t: Template) -> Problems:
    problems = []
    assignments = role_assignments(res_t) + role_assignments(reader_t) + role_assignments(main_t)
    for ra in assignments:
        if ra.role_id in FORBIDDEN_ROLES:
            problems.append(f"{ra.where}:{ra.symbol} assigns {FORBIDDEN_ROLES[ra.role_id]}")
        # guid(scope, principal, role): the scope's id, the principal (identity.id for the UAMI), the role.
        principal_key = "identity.id" if ra.principal == "identity.properties.principalId" else ra.principal
        fn = re.fullmatch(r"guid\((.+?), (.+?), (.+?)\)", ra.name)
        if (
            not fn
            or fn[1] != f"{ra.scope_symbol}.id"
            or fn[2] != principal_key
            or role_id_of(fn[3], res_t, reader_t) != ra.role_id
        ):
            problems.append(f"{ra.where}:{ra.symbol} name {ra.name} is not guid(scope.id, principal, role)")
    app = {
        (ra.role_id, ra.scope_type)
        for ra in assignments
        if ra.principal in ("identity.properties.principalId", "principalId")
    }
    if app != APP_ROLES:
        problems.append(f"app identity roles differ: missing {APP_ROLES - app}, unexpected {app - APP_ROLES}")
    for ra in assignments:
        is_app = ra.principal in ("identity.properties.principalId", "principalId")
        if is_app and (ra.condition is not None or ra.principal_type != "ServicePrincipal"):
            problems.append(f"{ra.where}:{ra.symbol} must be unconditional with principalType ServicePrincipal")
        if not is_app:
            if (ra.role_id, ra.scope_type) not in DEPLOYER_ROLES:
                problems.append(f"{ra.where}:{ra.symbol} grants {ra.role_id} on {ra.scope_type} to {ra.principal}")
            # The condition, and the variable it names if any (grantDeployer = grantDeployerAccess && ...).
            condition_text = f"{ra.condition} {render(res_t.variables.get(ra.condition or ''))}"
            if ra.condition is None or "grantDeployerAccess" not in condition_text:
                problems.append(f"{ra.where}:{ra.symbol} (for {ra.principal}) must depend on grantDeployerAccess")
    # The workspace role lives in a module deployed at the workspace's own resource group and subscription.
    # Its one allowed condition: assignWorkspaceReader (default true), for an owner who grants it by hand.
    path, condition, config = res_t.module("sentinelAccess")
    workspace_scope = "resource_group(sentinelWorkspaceParts[4], sentinelWorkspaceParts[2])"
    if path != "modules/workspace-reader.bicep":
        problems.append("resources.bicep must deploy modules/workspace-reader.bicep as sentinelAccess")
    if (
        condition != "assignWorkspaceReader"
        or (res_t.params.get("assignWorkspaceReader") or {}).get("default") is not True
    ):
        problems.append("the workspace role must be on unless assignWorkspaceReader (default true) says otherwise")
    if render(config.get("scope")) != workspace_scope:
        problems.append(f"workspace module scope is {render(config.get('scope'))}")
    if render(res_t.variables.get("sentinelWorkspaceParts")) != "split(sentinelWorkspaceResourceId, /)":
        problems.append("sentinelWorkspaceParts must split the workspace resource id parameter")
    params = config.get("params") or {}
    if render(params.get("principalId")) != "identity.properties.principalId":
        problems.append("the workspace module must grant the app identity")
    if render(params.get("workspaceName")) != "last(sentinelWorkspaceParts)":
        problems.append("the workspace module must target the workspace named in the resource id")
    sentinel = res_t.resource("sentinelWorkspace")
    if (
        sentinel is None
        or not sentinel.existing
        or render(sentinel.config.get("scope")) != workspace_scope
        or render(sentinel.config.get("name")) != "last(sentinelWorkspaceParts)"
    ):
        problems.append("resources.bicep must read the existing Sentinel workspace in its own resource group")
    if app_settings(res_t).get("KQLWATCH_WORKSPACE_ID") != "sentinelWorkspace.properties.customerId":
        problems.append("KQLWATCH_WORKSPACE_ID must be the Sentinel workspace's customerId")
    reader_ws = [r for r in reader_t.resources(WORKSPACE)]
    if len(reader_ws) != 1 or not reader_ws[0].existing:
        problems.append("workspace-reader.bicep must reference the existing workspace, not create one")
    return problems


def role_id_of(text: str, *templates: Template) -> str:
    for t in templates:
        value = t.variables.get(text)
        if isinstance(value, str):
            return value.lower()
    return text.lower()


def app_settings(t: Template) -> dict[str, str]:
    site = t.one("Microsoft.Web/sites")
    entries = (site.properties.get("siteConfig") or {}).get("appSettings") or []
    return {render(e.get("name")): render(e.get("value")) for e in entries}


def check_settings(t: Template, settings_module: ModuleType) -> Problems:
    """Every setting the code reads is set (renaming one in shared/runtime/settings.py without infra fails here)."""
    site = t.one("Microsoft.Web/sites")
    entries = (site.properties.get("siteConfig") or {}).get("appSettings") or []
    names = [render(e.get("name")) for e in entries]
    problems = [f"app setting {n} is set twice" for n in sorted({n for n in names if names.count(n) > 1})]
    present = set(names)
    local_only = {settings_module.ACCESS_TOKEN, settings_module.DNS_SERVERS}  # DNS_SERVERS: issue 16, stand-ins only
    wanted = set(settings_module.SETTING_NAMES) - local_only
    problems += [f"app setting {n} (read by shared/runtime/settings.py) is not set" for n in sorted(wanted - present)]
    problems += [f"required setting {n} is not set" for n in sorted(set(settings_module.REQUIRED_IN_AZURE) - present)]
    problems += [f"{n} is local-only and must never be set in Azure" for n in sorted(local_only & present)]
    prefix = settings_module.PARAM_PREFIX
    params = {n[len(prefix) :] for n in present if n.startswith(prefix)}
    problems += [f"rule parameter setting {prefix}{p} is not set" for p in sorted(SEED_RULE_PARAMS - params)]
    import function_app  # the queue bindings' connection: the host reads its identity settings, not our code

    queue_identity = {f"{function_app.CONNECTION}__{k}" for k in ("queueServiceUri", "credential", "clientId")}
    unknown = (
        {n for n in present if n.startswith("KQLWATCH_") and not n.startswith(prefix)}
        - set(settings_module.SETTING_NAMES)
        - queue_identity
    )
    problems += [f"app setting {n} is not read by shared/runtime/settings.py" for n in sorted(unknown)]
    return problems


def check_queues(t: Template) -> Problems:
    """Issue 14: both run queues pre-created on the app's storage (the identity cannot create the poison queue the
    host would), and the queue bindings' connection reaching them through the identity, never a key."""
    import function_app

    problems: Problems = []
    names = {render(q.config.get("name")) for q in t.resources(QUEUE) if not q.existing}
    resolved = {t.resolve(n) for n in names}
    for wanted in (function_app.QUEUE, function_app.POISON_QUEUE):
        if wanted not in resolved:
            problems.append(f"queue {wanted} is not created (found {sorted(resolved)})")
    for queue in t.resources(QUEUE):
        if render(queue.config.get("parent")) != "queueService":
            problems.append(f"queue {queue.symbol} is not on the app's storage account queue service")
    settings = app_settings(t)
    conn = function_app.CONNECTION
    expected = {
        f"{conn}__credential": "managedidentity",
        f"{conn}__clientId": "identity.properties.clientId",
        f"{conn}__queueServiceUri": "queueServiceUri",
    }
    for name, want in expected.items():
        if settings.get(name) != want:
            problems.append(f"app setting {name} is {settings.get(name)!r}, must be {want!r}")
    if conn in settings:
        problems.append(f"{conn} is set as a connection string: use the identity settings ({conn}__*)")
    return problems


# ---------------------------------------------------------------------------------------------------------
# Parsing and checkov
# ---------------------------------------------------------------------------------------------------------


def test_infra_has_the_expected_files() -> None:
    for path in ("main.bicep", "main.parameters.json", "resources.bicep", "modules/workspace-reader.bicep"):
        assert (INFRA / path).is_file(), f"infra/{path} is missing"
    assert (ROOT / "azure.yaml").is_file()


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    parse_bicep(path)  # raises BicepSyntaxError "file:line:column: reason"


def test_a_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text("param a string\n\nresource x 'A/b@2020-01-01' = {\n  name: \n}\n", encoding="utf-8")
    with pytest.raises(BicepSyntaxError, match=r"broken\.bicep:5:1: "):
        parse_bicep(broken)


def checkov_binary() -> Path:
    if CHECKOV.is_file() and os.access(CHECKOV, os.X_OK):
        return CHECKOV
    message = f"checkov is not installed at {CHECKOV.relative_to(ROOT)}; run: {INSTALL_HINT}"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def run_checkov(directory: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [str(checkov_binary()), "--config-file", str(CHECKOV_CONFIG), "-d", str(directory), "-o", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov did not print JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    reports = report if isinstance(report, list) else [report]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    assert bicep, f"checkov scanned no Bicep resources in {directory}: {report}"
    result: dict[str, Any] = bicep[0]
    return result


def test_checkov_passes_with_only_documented_skips() -> None:
    report = run_checkov(INFRA)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']} at {c['file_path']}:{c['file_line_range'][0]} ({c['resource']})"
        for c in report["results"].get("failed_checks", [])
    ]
    assert summary["parsing_errors"] == 0, f"checkov could not parse some files: {report['results']}"
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert summary["resource_count"] >= 20, f"checkov saw only {summary['resource_count']} resources"
    assert summary["passed"] > 0


def test_checkov_catches_a_weakened_template(tmp_path: Path) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    mutate(copy / "resources.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'")
    report = run_checkov(copy)
    failed = {c["check_id"] for c in report["results"].get("failed_checks", [])}
    assert "CKV_AZURE_44" in failed, f"checkov did not flag TLS 1.0 on the storage account: {failed}"


def test_every_checkov_skip_has_a_reason() -> None:
    text = CHECKOV_CONFIG.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    skips = config.get("skip-check") or []
    assert config.get("framework") == ["bicep"]
    for check_id in skips:
        line = next((ln for ln in text.splitlines() if re.match(rf"\s*-\s*{re.escape(check_id)}\b", ln)), "")
        reason = line.partition("#")[2].strip()
        assert len(reason) >= 20, f"{CHECKOV_CONFIG.name}: skip {check_id} needs a one-line reason (# ...)"
    assert len(skips) == len(set(skips)), "duplicate checkov skips"


# ---------------------------------------------------------------------------------------------------------
# Policy tests over the parsed templates
# ---------------------------------------------------------------------------------------------------------


def test_storage_is_entra_only_https_and_tls12(res: Template) -> None:
    assert check_storage_hardening(res) == []


def test_function_app_is_https_only_tls12_without_ftp_or_publishing_passwords(res: Template) -> None:
    assert check_site_hardening(res) == []


def test_function_app_is_flex_consumption_python_311_without_forbidden_settings(res: Template) -> None:
    assert check_flex_consumption(res) == []


def test_one_user_assigned_identity_does_everything(res: Template) -> None:
    assert check_identity_only(res) == []


def test_application_insights_uses_entra_ingestion_only(res: Template) -> None:
    assert check_telemetry(res) == []


def test_webhook_url_lives_in_key_vault_and_reaches_the_app_as_a_reference(res: Template) -> None:
    assert check_key_vault(res) == []


def test_role_assignments_are_exactly_the_least_privilege_set(res: Template, reader: Template, main: Template) -> None:
    assert check_roles(res, reader, main) == []


def test_run_queues_are_precreated_and_reached_through_the_identity(res: Template) -> None:
    assert check_queues(res) == []


def test_every_setting_the_code_reads_is_set(res: Template, settings: ModuleType) -> None:
    assert check_settings(res, settings) == []


@pytest.mark.parametrize("name", ["main.bicep", "resources.bicep", "modules/workspace-reader.bicep"])
def test_nothing_secret_in_outputs(name: str) -> None:
    assert check_no_secret_outputs(load(INFRA / name)) == []


def test_state_settings_and_outputs_point_at_the_same_table(res: Template, main: Template) -> None:
    settings_ = app_settings(res)
    assert settings_["KQLWATCH_STATE_CONNECTION"] == "tableServiceUri"
    assert res.variables["tableServiceUri"] == "https://${storageAccountName}.table.${environment().suffixes.storage}"
    assert render(res.outputs["stateTableEndpoint"]["value"]) == "tableServiceUri"
    assert settings_["KQLWATCH_STATE_TABLE"] == "stateTable.name"
    assert render(res.outputs["stateTableName"]["value"]) == "stateTable.name"
    assert render(res.one("Microsoft.Storage/storageAccounts/tableServices/tables").config["name"]) == "stateTableName"
    assert res.variables["storageAccountName"].startswith("st${")
    assert render(res.one(STORAGE).config["name"]) == "storageAccountName"


def test_outputs_are_the_ones_a_user_needs_and_are_wired_correctly(res: Template, main: Template) -> None:
    expected_res = {
        "functionAppName": "site.name",
        "identityPrincipalId": "identity.properties.principalId",
        "identityClientId": "identity.properties.clientId",
        "stateTableEndpoint": "tableServiceUri",
        "runQueueEndpoint": "queueServiceUri",
        "keyVaultName": "vault.name",
        "applicationInsightsName": "appInsights.name",
        "sentinelWorkspaceId": "sentinelWorkspace.properties.customerId",
    }
    for name, want in expected_res.items():
        assert render(res.outputs[name]["value"]) == want, f"resources.bicep output {name}"
    expected_main = {
        "AZURE_FUNCTION_APP_NAME": "resources.outputs.functionAppName",
        "AZURE_FUNCTION_APP_IDENTITY_PRINCIPAL_ID": "resources.outputs.identityPrincipalId",
        "STATE_TABLE_ENDPOINT": "resources.outputs.stateTableEndpoint",
        "AZURE_RESOURCE_GROUP": "rg.name",
    }
    for name, want in expected_main.items():
        assert render(main.outputs[name]["value"]) == want, f"main.bicep output {name}"
    for name, body in main.outputs.items():
        ref = re.fullmatch(r"resources\.outputs\.(\w+)", render(body["value"]))
        if ref:
            assert ref[1] in res.outputs, f"main.bicep output {name} reads a missing output {ref[1]}"


def test_main_passes_every_parameter_resources_needs(main: Template, res: Template, reader: Template) -> None:
    wiring = [
        (main.module("resources"), res, "resources.bicep"),
        (res.module("sentinelAccess"), reader, "modules/workspace-reader.bicep"),
    ]
    for (path_used, _condition, config), target, path in wiring:
        assert path_used == path
        given = set(config.get("params") or {})
        required = {name for name, body in target.params.items() if body.get("default") is None}
        assert required <= given, f"{path}: required parameters not passed: {required - given}"
        assert given <= set(target.params), f"{path}: unknown parameters passed: {given - set(target.params)}"
    passed = main.module("resources")[2]["params"]
    assert render(passed["teamsWebhookUrl"]) == "teamsWebhookUrl" and main.is_secure_param("teamsWebhookUrl")
    assert res.is_secure_param("teamsWebhookUrl")


def test_azd_parameters_file_maps_every_required_parameter(main: Template) -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(values) <= set(main.params), f"unknown parameters: {set(values) - set(main.params)}"
    required = {name for name, body in main.params.items() if body.get("default") is None}
    assert required <= set(values), f"main.parameters.json misses {required - set(values)}"
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"
    assert values["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    for name, body in values.items():
        assert re.fullmatch(r"\$\{[A-Z0-9_]+(=[^}]*)?\}", body["value"]), f"{name} must come from the azd environment"


def test_azure_yaml_deploys_this_folder_to_the_tagged_function_app(res: Template) -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert config["infra"]["path"] == "infra"
    services = config["services"]
    assert list(services) == ["api"]
    assert services["api"] == {"project": ".", "language": "python", "host": "function", "remoteBuild": True}
    assert "azd-service-name: api" in render(res.one("Microsoft.Web/sites").config["tags"])


def test_no_hard_coded_region_list() -> None:
    regions = re.compile(
        r"'(east|west|north|south|central|uk|france|germany|sweden|japan|australia)\w*(us|europe|asia)?\d?'"
    )
    for path in bicep_files():
        t = load(path)
        for name, body in t.params.items():
            decorators = {d.get("type") for d in body.get("decorators") or []}
            if "location" in name.lower():
                assert "allowed" not in decorators, f"{t.name}: parameter {name} has an @allowed region list"
        assert not regions.search(path.read_text(encoding="utf-8")), f"{t.name} hard-codes a region"


def test_resource_api_versions_are_stable_and_current() -> None:
    for path in bicep_files():
        t = load(path)
        for r in t.resources():
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.api_version), f"{t.name}:{r.symbol} uses {r.api_version}"
            assert r.api_version >= "2020-02-02", f"{t.name}:{r.symbol} uses an old API version {r.api_version}"
        for name, module in t.modules.items():
            assert module["type"] == "local", f"{t.name}: module {name} is not local (registry modules are unchecked)"


def test_defaults_agree_with_the_code(res: Template, settings: ModuleType) -> None:
    durations = _import("shared.rules.durations")
    defaults = {name: body.get("default") for name, body in res.params.items()}
    assert defaults["schedule"] == settings.DEFAULT_SCHEDULE
    assert len(str(defaults["schedule"]).split()) == 6, "NCRONTAB needs six fields"
    assert defaults["stateTableName"] == settings.DEFAULT_STATE_TABLE
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", str(defaults["stateTableName"]))
    assert defaults["logsEndpoint"] == settings.DEFAULT_LOGS_ENDPOINT
    assert defaults["rulesDir"] == settings.DEFAULT_RULES_DIR
    assert durations.parse_duration(defaults["maxCatchup"]) == settings.DEFAULT_MAX_CATCHUP
    assert durations.parse_duration(defaults["deliveryMaxAge"]) == settings.DEFAULT_DELIVERY_MAX_AGE
    assert durations.parse_duration(defaults["maxLateness"]) == settings.DEFAULT_MAX_LATENESS
    assert durations.parse_duration(defaults["lateSweep"]) == settings.DEFAULT_LATE_SWEEP


def test_generated_names_fit_azure_limits(res: Template) -> None:
    max_prefix = next(d["argument"] for d in res.params["namePrefix"]["decorators"] if d.get("type") == "max_length")
    token = 13  # uniqueString() length

    def longest(template: str) -> int:
        length = len(re.sub(r"\$\{[^}]*\}", "", template))
        for expr in re.findall(r"\$\{([^}]*)\}", template):
            take = re.fullmatch(r"take\(\w+, (\d+)\)", expr)
            length += int(take[1]) if take else token if expr == "resourceToken" else max_prefix
        return length

    limits = {"storageAccountName": 24, "keyVaultName": 24, "functionAppName": 60, "identityName": 128}
    for var, limit in limits.items():
        assert longest(res.variables[var]) <= limit, f"{var} can exceed {limit} characters"
    for var in ("storageAccountName", "keyVaultName"):
        assert "compactPrefix" in res.variables[var], f"{var} must not contain hyphens"


def test_rule_parameters_name_let_bindings_in_the_rules(res: Template, settings: ModuleType) -> None:
    rules = _import("shared.rules.loader")
    params = _import("shared.rules.params")
    loaded = rules.load_rules(ROOT / "rules")
    if not loaded.rules:
        pytest.skip("no rules in rules/ yet; the seed rule's parameters are checked against SEED_RULE_PARAMS")
    lets = {name for rule in loaded.rules for name in params.bindings(rule.query)}
    prefix = settings.PARAM_PREFIX
    set_params = {n[len(prefix) :] for n in app_settings(res) if n.startswith(prefix)}
    assert set_params <= lets, f"{sorted(set_params - lets)} name no top-level let in any rule"


# ---------------------------------------------------------------------------------------------------------
# Each check can fail: weaken a copy of the templates and expect the check to object
# ---------------------------------------------------------------------------------------------------------


def mutate(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"mutation anchor {old!r} must occur exactly once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    check: Callable[[Template, Template, Template, ModuleType], Problems]


def _res(
    check: Callable[[Template], Problems],
) -> Callable[[Template, Template, Template, ModuleType], Problems]:
    return lambda main_t, res_t, reader_t, settings_m: check(res_t)


def _roles(main_t: Template, res_t: Template, reader_t: Template, settings_m: ModuleType) -> Problems:
    return check_roles(res_t, reader_t, main_t)


def _settings(main_t: Template, res_t: Template, reader_t: Template, settings_m: ModuleType) -> Problems:
    return check_settings(res_t, settings_m)


def _outputs(main_t: Template, res_t: Template, reader_t: Template, settings_m: ModuleType) -> Problems:
    return check_no_secret_outputs(main_t) + check_no_secret_outputs(res_t)


SETTING_BLOCK = "        {{\n          name: '{name}'\n          value: {value}\n        }}\n"

MUTATIONS = [
    Mutation(
        "no-poison-queue",
        "resources.bicep",
        "  name: poisonQueueName\n",
        "  name: runsQueueName\n",
        _res(check_queues),
    ),
    Mutation(
        "queue-connection-by-key",
        "resources.bicep",
        "          value: 'managedidentity'\n        }\n        {\n          name: 'KQLWATCH_QUEUE_CONNECTION__clientId'",
        "          value: 'secret'\n        }\n        {\n          name: 'KQLWATCH_QUEUE_CONNECTION__clientId'",
        _res(check_queues),
    ),
    Mutation(
        "queue-contributor-instead",
        "resources.bicep",
        "var storageQueueDataMessageSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'",
        "var storageQueueDataMessageSenderRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'",
        _roles,
    ),
    Mutation(
        "shared-key-on",
        "resources.bicep",
        "allowSharedKeyAccess: false",
        "allowSharedKeyAccess: true",
        _res(check_storage_hardening),
    ),
    Mutation(
        "public-blob",
        "resources.bicep",
        "allowBlobPublicAccess: false",
        "allowBlobPublicAccess: true",
        _res(check_storage_hardening),
    ),
    Mutation(
        "http-storage",
        "resources.bicep",
        "supportsHttpsTrafficOnly: true",
        "supportsHttpsTrafficOnly: false",
        _res(check_storage_hardening),
    ),
    Mutation(
        "tls10-storage",
        "resources.bicep",
        "minimumTlsVersion: 'TLS1_2'",
        "minimumTlsVersion: 'TLS1_0'",
        _res(check_storage_hardening),
    ),
    Mutation("http-site", "resources.bicep", "httpsOnly: true", "httpsOnly: false", _res(check_site_hardening)),
    Mutation(
        "ftps-on",
        "resources.bicep",
        "ftpsState: 'Disabled'",
        "ftpsState: 'AllAllowed'",
        _res(check_site_hardening),
    ),
    Mutation(
        "tls10-site",
        "resources.bicep",
        "      minTlsVersion: '1.2'",
        "      minTlsVersion: '1.0'",
        _res(check_site_hardening),
    ),
    Mutation(
        "scm-password",
        "resources.bicep",
        "name: 'scm'\n  properties: {\n    allow: false",
        "name: 'scm'\n  properties: {\n    allow: true",
        _res(check_site_hardening),
    ),
    Mutation(
        "worker-runtime",
        "resources.bicep",
        "      appSettings: [\n",
        "      appSettings: [\n" + SETTING_BLOCK.format(name="FUNCTIONS_WORKER_RUNTIME", value="'python'"),
        _res(check_flex_consumption),
    ),
    Mutation(
        "content-share",
        "resources.bicep",
        "      appSettings: [\n",
        "      appSettings: [\n" + SETTING_BLOCK.format(name="WEBSITE_CONTENTSHARE", value="'x'"),
        _res(check_flex_consumption),
    ),
    Mutation(
        "python-310",
        "resources.bicep",
        "var pythonVersion = '3.11'",
        "var pythonVersion = '3.10'",
        _res(check_flex_consumption),
    ),
    Mutation(
        "not-flex",
        "resources.bicep",
        "name: 'FC1'\n    tier: 'FlexConsumption'",
        "name: 'Y1'\n    tier: 'Dynamic'",
        _res(check_flex_consumption),
    ),
    Mutation(
        "package-system-identity",
        "resources.bicep",
        "type: 'UserAssignedIdentity'",
        "type: 'SystemAssignedIdentity'",
        _res(check_flex_consumption),
    ),
    Mutation(
        "system-identity",
        "resources.bicep",
        "type: 'UserAssigned'\n",
        "type: 'SystemAssigned, UserAssigned'\n",
        _res(check_identity_only),
    ),
    Mutation(
        "host-storage-key",
        "resources.bicep",
        "      appSettings: [\n",
        "      appSettings: [\n"
        + SETTING_BLOCK.format(name="AzureWebJobsStorage", value="'AccountKey=${storage.listKeys().keys[0].value}'"),
        _res(check_identity_only),
    ),
    Mutation(
        "queue-uri",
        "resources.bicep",
        "      appSettings: [\n",
        "      appSettings: [\n" + SETTING_BLOCK.format(name="AzureWebJobsStorage__queueServiceUri", value="'q'"),
        _res(check_identity_only),
    ),
    Mutation(
        "ai-local-auth",
        "resources.bicep",
        "DisableLocalAuth: true",
        "DisableLocalAuth: false",
        _res(check_telemetry),
    ),
    Mutation(
        "no-purge-protection",
        "resources.bicep",
        "enablePurgeProtection: true",
        "enablePurgeProtection: false",
        _res(check_key_vault),
    ),
    Mutation(
        "access-policies",
        "resources.bicep",
        "enableRbacAuthorization: true",
        "enableRbacAuthorization: false",
        _res(check_key_vault),
    ),
    Mutation(
        "plain-webhook",
        "resources.bicep",
        "value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${webhookSecret.name}/)'",
        "value: teamsWebhookUrl",
        _res(check_key_vault),
    ),
    Mutation(
        "contributor",
        "resources.bicep",
        "var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'",
        "var storageBlobDataOwnerRoleId = 'b24988ac-6180-42a0-ab88-20f7382dd24c'",
        _roles,
    ),
    Mutation(
        "table-role-on-vault",
        "resources.bicep",
        "name: guid(storage.id, identity.id, storageTableDataContributorRoleId)\n  scope: storage",
        "name: guid(vault.id, identity.id, storageTableDataContributorRoleId)\n  scope: vault",
        _roles,
    ),
    Mutation(
        "name-not-guid-of-scope",
        "resources.bicep",
        "name: guid(appInsights.id, identity.id, monitoringMetricsPublisherRoleId)",
        "name: guid(resourceGroup().id, monitoringMetricsPublisherRoleId)",
        _roles,
    ),
    Mutation(
        "deployer-always",
        "resources.bicep",
        "deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployer) {",
        "deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {",
        _roles,
    ),
    Mutation(
        "reader-role-swapped",
        "modules/workspace-reader.bicep",
        "var logAnalyticsReaderRoleId = '73c42c96-874c-492b-b04d-ab87d138a893'",
        "var logAnalyticsReaderRoleId = '92aaf0da-9dab-42b6-94a3-d43ce8d16293'",
        _roles,
    ),
    Mutation(
        "workspace-role-off-by-default",
        "resources.bicep",
        "param assignWorkspaceReader bool = true",
        "param assignWorkspaceReader bool = false",
        _roles,
    ),
    Mutation(
        "workspace-in-app-rg",
        "resources.bicep",
        "${resourceToken}'\n  scope: resourceGroup(sentinelWorkspaceParts[2], sentinelWorkspaceParts[4])",
        "${resourceToken}'\n  scope: resourceGroup()",
        _roles,
    ),
    Mutation(
        "schedule-missing",
        "resources.bicep",
        SETTING_BLOCK.format(name="KQLWATCH_SCHEDULE", value="schedule"),
        "",
        _settings,
    ),
    Mutation(
        "param-missing",
        "resources.bicep",
        SETTING_BLOCK.format(name="KQLWATCH_PARAM_TriggerResults", value="triggerResults"),
        "",
        _settings,
    ),
    Mutation(
        "access-token-deployed",
        "resources.bicep",
        "      appSettings: [\n",
        "      appSettings: [\n" + SETTING_BLOCK.format(name="KQLWATCH_ACCESS_TOKEN", value="'x'"),
        _settings,
    ),
    Mutation(
        "webhook-output",
        "resources.bicep",
        "output functionAppName string = site.name",
        "output functionAppName string = site.name\noutput hook string = teamsWebhookUrl",
        _outputs,
    ),
    Mutation(
        "insecure-webhook-param",
        "main.bicep",
        "@secure()\n@minLength(1)\nparam teamsWebhookUrl string",
        "@minLength(1)\nparam teamsWebhookUrl string",
        _outputs,
    ),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.id)
def test_each_check_fails_on_a_weakened_template(
    mutation: Mutation, tmp_path: Path, main: Template, res: Template, reader: Template, settings: ModuleType
) -> None:
    assert mutation.check(main, res, reader, settings) == [], "the check must pass on the real templates"
    original = INFRA / mutation.file
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    mutate(copy, mutation.old, mutation.new)
    weakened = {"main.bicep": main, "resources.bicep": res, "modules/workspace-reader.bicep": reader}
    weakened[mutation.file] = load(copy)
    problems = mutation.check(
        weakened["main.bicep"],
        weakened["resources.bicep"],
        weakened["modules/workspace-reader.bicep"],
        settings,
    )
    assert problems, f"{mutation.id}: the weakened template was not caught"


def test_renaming_a_setting_in_the_code_fails_the_settings_check(res: Template, settings: ModuleType) -> None:
    renamed = ModuleType("renamed_settings")
    for name in ("ACCESS_TOKEN", "DNS_SERVERS", "PARAM_PREFIX", "REQUIRED_IN_AZURE"):
        setattr(renamed, name, getattr(settings, name))
    renamed.SETTING_NAMES = tuple(  # type: ignore[attr-defined]
        "KQLWATCH_TIMER_SCHEDULE" if n == settings.SCHEDULE else n for n in settings.SETTING_NAMES
    )
    problems = check_settings(res, renamed)
    assert any("KQLWATCH_TIMER_SCHEDULE" in p for p in problems), problems
