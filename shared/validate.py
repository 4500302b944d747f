"""`kqlwatch validate`: check rule files as the Azure-Sentinel repository's CI would, and their KQL with
Microsoft's Kusto.Language parser (tools/kusto-validate.js, one Node process for all files).

Every finding reads `file:line:col: error|warning: message [code]`; a file is valid when it has no error.
Scheduled and NRT rules must carry Sentinel's required fields; a file with neither `kind` nor
`queryFrequency` is a hunting query and is checked on the fields it has.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import KqlwatchError
from shared.rules import broken_links, is_exclusions_file

if TYPE_CHECKING:
    import yaml

ROOT = Path(__file__).resolve().parents[1]
KUSTO_SCRIPT = ROOT / "tools" / "kusto-validate.js"
KUSTO_PACKAGE = ROOT / "node_modules" / "@kusto" / "language-service-next"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

ERROR, WARNING = "error", "warning"
SCHEDULED_REQUIRED = (
    "id", "name", "description", "severity", "requiredDataConnectors", "queryFrequency", "queryPeriod",
    "triggerOperator", "triggerThreshold", "tactics", "relevantTechniques", "query", "entityMappings", "version",
    "kind",
)  # fmt: skip
# Sentinel's NRT rules run every minute: no schedule or trigger fields.
NRT_REQUIRED = tuple(
    k for k in SCHEDULED_REQUIRED if k not in ("queryFrequency", "queryPeriod", "triggerOperator", "triggerThreshold")
)
HUNTING_REQUIRED = ("id", "name", "description", "query")
KINDS = ("Scheduled", "NRT")
MIN_DURATION, MAX_DURATION = timedelta(minutes=5), timedelta(days=14)
LONG_PERIOD, LONG_PERIOD_MIN_FREQUENCY = timedelta(days=2), timedelta(hours=1)
MAX_SUPPRESSION = timedelta(hours=24)
SENTINEL_QUERY_CHARS = 10_000
MAX_THRESHOLD = 10_000
TRIGGER_OPERATORS = ("gt", "lt", "eq", "ne")
ARM_TRIGGER_OPERATORS = {"GreaterThan": "gt", "LessThan": "lt", "Equal": "eq", "NotEqual": "ne"}
AGGREGATIONS = ("SingleAlert", "AlertPerResult")
# Sentinel's tactic names (ATT&CK Enterprise and ICS; PreAttack is Sentinel's older name for the pre-attack ones).
TACTICS = (
    "PreAttack", "Reconnaissance", "ResourceDevelopment", "InitialAccess", "Execution", "Persistence",
    "PrivilegeEscalation", "DefenseEvasion", "CredentialAccess", "Discovery", "LateralMovement", "Collection",
    "Exfiltration", "CommandAndControl", "Impact", "ImpairProcessControl", "InhibitResponseFunction",
)  # fmt: skip
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_COLUMN = re.compile(r"^[a-zA-Z_]+\w*$")  # Sentinel: entity/custom-detail columns
_DETAIL_KEY = re.compile(r"^[a-zA-Z]+\w*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
# Entity type -> (valid identifiers, required identifier combinations: one of them must be mapped).
# From the Azure-Sentinel repository's CI (.script/tests/detectionTemplateSchemaValidation/EntityMappingIdentifiers.cs).
ENTITY_IDENTIFIERS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "Account": (
        ("Name", "FullName", "NTDomain", "DnsDomain", "UPNSuffix", "Sid", "AadTenantId", "AadUserId", "PUID",
         "IsDomainJoined", "DisplayName", "ObjectGuid"),
        (("FullName",), ("Sid",), ("Name",), ("AadUserId",), ("PUID",), ("ObjectGuid",)),
    ),
    "AzureResource": (("ResourceId",), (("ResourceId",),)),
    "CloudApplication": (("AppId", "Name", "InstanceName"), (("AppId",), ("Name",))),
    "DNS": (("DomainName",), (("DomainName",),)),
    "File": (("Directory", "Name"), (("Name",),)),
    "FileHash": (("Algorithm", "Value"), (("Algorithm", "Value"),)),
    "Host": (
        ("DnsDomain", "NTDomain", "HostName", "FullName", "NetBiosName", "AzureID", "OMSAgentID", "OSFamily",
         "OSVersion", "IsDomainJoined"),
        (("FullName",), ("HostName",), ("NetBiosName",), ("AzureID",), ("OMSAgentID",)),
    ),
    "IoTDevice": (
        ("DeviceId", "DeviceName", "Manufacturer", "Model", "FirmwareVersion", "OperatingSystem", "MacAddress",
         "Protocols", "SerialNumber", "Source", "IoTSecurityAgentId", "DeviceType"),
        (("DeviceId",),),
    ),
    "IP": (("Address",), (("Address",),)),
    "Mailbox": (
        ("MailboxPrimaryAddress", "DisplayName", "Upn", "ExternalDirectoryObjectId", "RiskLevel"),
        (("MailboxPrimaryAddress",),),
    ),
    "MailCluster": (
        ("NetworkMessageIds", "CountByDeliveryStatus", "CountByThreatType", "CountByProtectionStatus", "Threats",
         "Query", "QueryTime", "MailCount", "IsVolumeAnomaly", "Source", "ClusterSourceIdentifier",
         "ClusterSourceType", "ClusterQueryStartTime", "ClusterQueryEndTime", "ClusterGroup"),
        (("Query",), ("Source",)),
    ),
    "MailMessage": (
        ("Recipient", "Urls", "Threats", "Sender", "P1Sender", "P1SenderDisplayName", "P1SenderDomain", "SenderIP",
         "P2Sender", "P2SenderDisplayName", "P2SenderDomain", "ReceivedDate", "NetworkMessageId",
         "InternetMessageId", "Subject", "BodyFingerprintBin1", "BodyFingerprintBin2", "BodyFingerprintBin3",
         "BodyFingerprintBin4", "BodyFingerprintBin5", "AntispamDirection", "DeliveryAction", "DeliveryLocation",
         "Language", "ThreatDetectionMethods"),
        (("NetworkMessageId",), ("Recipient",)),
    ),
    "Malware": (("Name", "Category"), (("Name",),)),
    "Process": (("ProcessId", "CommandLine", "ElevationToken", "CreationTimeUtc"), (("CommandLine",), ("ProcessId",))),
    "RegistryKey": (("Hive", "Key"), (("Key",), ("Hive",))),
    "RegistryValue": (("Name", "Value", "ValueType"), (("Name",),)),
    "SecurityGroup": (("DistinguishedName", "SID", "ObjectGuid"), (("DistinguishedName",), ("SID",), ("ObjectGuid",))),
    "SubmissionMail": (
        ("NetworkMessageId", "Timestamp", "Recipient", "Sender", "SenderIp", "Subject", "ReportType", "SubmissionId",
         "SubmissionDate", "Submitter"),
        (("SubmissionId",), ("NetworkMessageId",), ("Recipient",), ("Submitter",)),
    ),
    "URL": (("Url",), (("Url",),)),
}  # fmt: skip
# Data connector ids (Azure-Sentinel CI's ValidConnectorIds.json, the Microsoft ones and those the bundled corpus
# uses). Not exhaustive - an id missing here is a warning, not an error.
CONNECTOR_IDS = frozenset(
    {
        "AIVectraDetect", "AWS", "Agari", "AkamaiSecurityEvents", "AlcideKAudit", "AlsidForAD", "ApacheHTTPServer",
        "ArubaClearPass", "AzureActiveDirectory", "AzureActiveDirectoryIdentityProtection", "AzureActivity",
        "AzureAdvancedThreatProtection", "AzureFirewall", "AzureInformationProtection", "AzureKeyVault",
        "AzureKubernetes", "AzureMonitor(IIS)", "AzureMonitor(VMInsights)", "AzureMonitor(WireData)",
        "AzureSecurityCenter", "AzureSql", "AzureStorageAccount", "Barracuda", "BarracudaCloudFirewall",
        "BehaviorAnalytics", "BetterMTD", "BeyondSecuritybeSECURE", "BlackberryCylancePROTECT", "BoxDataConnector",
        "BroadcomSymantecDLP", "CEF", "CheckPoint", "CiscoASA", "CiscoFirepowerEStreamer", "CiscoISE", "CiscoMeraki",
        "CiscoUCS", "CiscoUmbrellaDataConnector", "Citrix", "CitrixWAF", "CloudflareDataConnector",
        "CognniSentinelDataConnector", "ContrastProtect", "Corelight", "CrowdStrikeFalconEndpointProtection",
        "CyberArk", "CyberpionSecurityLogs", "DDOS", "DNS", "Darktrace", "Dynamics365", "ESETEnterpriseInspector",
        "ESETPROTECT", "EsetSMC", "ExtraHopNetworks", "F5", "F5BigIp", "ForcepointCasb", "ForcepointDlp",
        "ForcepointNgfw", "ForgeRock", "Fortinet", "GWorkspaceRAPI", "ImpervaWAFGateway", "ImportedConnector",
        "InfobloxCloudDataConnector", "InfobloxNIOS", "IoT", "IronNetIronDefense", "JuniperSRX", "LookoutAPI",
        "McAfeeePO", "MicrosoftCloudAppSecurity", "MicrosoftDefenderAdvancedThreatProtection",
        "MicrosoftDefenderThreatIntelligence", "MicrosoftThreatProtection", "MorphisecUTPP", "NXLogDnsLogs",
        "NXLogLinuxAudit", "Netskope", "Office365", "OfficeATP", "OktaSSO", "OnapsisPlatform", "OneIdentity",
        "OracleDatabaseAudit", "OrcaSecurityAlerts", "PaloAltoNetworks", "PaloAltoPrismaCloud",
        "Perimeter81ActivityLogs", "PingFederate", "PowerPlatformAdmin", "ProofpointPOD", "ProofpointTAP",
        "PulseConnectSecure", "QualysKB", "QualysVulnerabilityManagement", "SAP", "SalesforceServiceCloud",
        "SecurityEvents", "SemperisDSP", "SenservaPro", "SlackAuditAPI", "SonicWallFirewall", "SophosCloudOptix",
        "SophosXGFirewall", "SquadraTechnologiesSecRmm", "SquidProxy", "Symantec", "SymantecEndpointProtection",
        "SymantecProxySG", "SymantecVIP", "Syslog", "ThreatIntelligence", "ThreatIntelligenceTaxii",
        "ThycoticSecretServer_CEF", "TrendMicro", "TrendMicroTippingPoint", "TrendMicroXDR", "UbiquitiUnifi",
        "VMwareCarbonBlack", "VMwareESXi", "WAF", "WindowsFirewall", "WindowsSecurityEvents", "WireX_Systems_NFP",
        "ZimperiumMtdAlerts", "Zscaler", "illusiveAttackManagementSystem", "vArmourAC"
    }
)  # fmt: skip


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    col: int
    severity: str  # "error" | "warning"
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message} [{self.code}]"


@dataclass
class FileResult:
    path: str
    kind: str = "unreadable"  # "scheduled" | "nrt" | "hunting" | "unreadable"
    findings: list[Finding] = field(default_factory=list)
    window: str = ""  # issue 13: the run's window mode and why, when kqlwatch can load the rule

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == WARNING for f in self.findings)

    def verdict(self) -> str:
        what = {"scheduled": "scheduled rule", "nrt": "NRT rule", "hunting": "hunting query"}.get(self.kind, self.kind)
        tally = ((self.errors, "error"), (self.warnings, "warning"))
        counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in tally if n]
        return f"{'invalid' if self.errors else 'valid'}, {what}" + (f" ({', '.join(counts)})" if counts else "")


@dataclass(frozen=True)
class Report:
    files: list[FileResult]
    problems: list[Finding]  # not about one rule file (a path that does not exist, a dangling symlink)

    @property
    def ok(self) -> bool:
        return all(p.severity != ERROR for p in self.problems) and all(f.errors == 0 for f in self.files)

    def findings(self) -> list[Finding]:
        return self.problems + [f for r in self.files for f in sorted(r.findings, key=_finding_order)]

    def summary(self) -> str:
        kinds = Counter(r.kind for r in self.files)
        with_errors = sum(r.errors > 0 for r in self.files)
        warnings = sum(r.warnings for r in self.files)
        labels = {"scheduled": "scheduled", "nrt": "NRT", "hunting": "hunting quer", "unreadable": "unreadable"}
        described = ", ".join(
            f"{kinds[k]} {label}" + ({1: "y"}.get(kinds[k], "ies") if k == "hunting" else "")
            for k, label in labels.items()
            if kinds[k]
        )
        return (
            f"validate: {len(self.files)} file{'' if len(self.files) == 1 else 's'}, {len(self.files) - with_errors} "
            f"valid, {with_errors} with errors, {warnings} warning{'' if warnings == 1 else 's'}"
            + (f" ({described})" if described else "")
        )

    def counts_by_code(self) -> Counter[tuple[str, str]]:
        return Counter((f.severity, f.code) for f in self.findings())


@dataclass(frozen=True)
class KqlResult:
    """Kusto.Language's verdict on one query."""

    diagnostics: list[dict[str, Any]]
    tables: list[str]
    tables_without_schema: list[str]
    columns: list[str] | None  # output columns, None when not all known


# ------------------------------------------------------------------------------------------------- the command


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="rule files or folders, searched recursively "
                        "for *.yaml / *.yml (default: rules/)")  # fmt: skip
    parser.add_argument("--no-kql", action="store_true", help="skip the KQL check (no Node.js needed)")
    parser.add_argument("-l", "--list", action="store_true", help="also print one line per file: its kind and verdict")
    parser.add_argument("--stats", action="store_true", help="also print how often each check fired")


def main(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] or [Path("rules")]
    report = validate_paths(paths, kql=not args.no_kql)
    for line in render(report, list_files=args.list, stats=args.stats):
        print(line)
    return 0 if report.ok else 1


def render(report: Report, *, list_files: bool = False, stats: bool = False) -> list[str]:
    """The command's output: findings file by file (and each file's verdict), then the summary."""
    lines = [str(finding) for finding in report.problems]
    for result in report.files:
        lines.extend(str(finding) for finding in sorted(result.findings, key=_finding_order))
        if list_files:
            lines.append(f"{result.path}: {result.verdict()}" + (f"; window: {result.window}" if result.window else ""))
    if stats:
        for (severity, code), count in sorted(report.counts_by_code().items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {count:5d}  {severity:<7} {code}")
    lines.append(report.summary())
    return lines


# ------------------------------------------------------------------------------------------------ the checker


def rule_paths(paths: Iterable[Path]) -> tuple[list[Path], list[Finding]]:
    """The rule files under `paths` (files as given; folders searched recursively), in a stable order."""
    found: list[Path] = []
    problems: list[Finding] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and _is_yaml(p) and not is_exclusions_file(p))
            )
            problems.extend(_broken_link(message) for message in broken_links(path))
        elif path.is_file():
            if not is_exclusions_file(path):
                found.append(path)
        else:
            problems.append(Finding(str(path), 1, 1, ERROR, "no such file or folder", "file"))
    unique = list(dict.fromkeys(found))
    return unique, problems


def _broken_link(message: str) -> Finding:
    where, _, reason = message.partition(": ")
    return Finding(where, 1, 1, WARNING, reason, "file")


def validate_paths(paths: Iterable[Path], *, kql: bool = True) -> Report:
    files, problems = rule_paths(paths)
    return Report(validate_files(files, kql=kql), problems)


def validate_files(paths: Sequence[Path], *, kql: bool = True) -> list[FileResult]:
    """Check every file; one Node process checks all their queries. Never raises for a bad file."""
    checked = [_check_file(path) for path in paths]
    _check_duplicate_ids(checked)
    if kql:
        with_query = [c for c in checked if c.query is not None]
        results = check_kql([c.query.value for c in with_query if c.query is not None])
        for c, result in zip(with_query, results, strict=True):
            _apply_kql(c, result)
    return [c.result for c in checked]


@dataclass
class _Query:
    value: str
    node: yaml.ScalarNode
    key_col: int


@dataclass
class _Checked:
    result: FileResult
    text: str = ""
    doc: Mapping[str, Any] = field(default_factory=dict)
    nodes: Mapping[str, tuple[yaml.Node, yaml.Node]] = field(default_factory=dict)  # key -> (key node, value node)
    query: _Query | None = None

    def add(self, severity: str, message: str, code: str, node: yaml.Node | None = None) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (1, 1)
        self.result.findings.append(Finding(self.result.path, line, col, severity, message, code))

    def error(self, message: str, code: str, node: yaml.Node | None = None) -> None:
        self.add(ERROR, message, code, node)

    def warning(self, message: str, code: str, node: yaml.Node | None = None) -> None:
        self.add(WARNING, message, code, node)

    def node(self, key: str) -> yaml.Node | None:
        pair = self.nodes.get(key)
        return pair[1] if pair else None

    def shaped(self, key: str, kind: type[yaml.Node], message: str, code: str) -> Any:
        """The field's node when it is set and of `kind` (a list or a mapping); otherwise None, and a wrong
        shape is reported with `message`."""
        node = self.node(key)
        if node is None or self.doc.get(key) is None:
            return None
        if not isinstance(node, kind):
            self.error(message, code, node)
            return None
        return node


def _check_file(path: Path) -> _Checked:
    import yaml

    from shared.rules import MAX_FILE_BYTES
    from shared.yamlguard import YamlRefused, bad_scalar_line, check_shape

    c = _Checked(FileResult(str(path)))
    if _is_yaml(path) and path.suffix not in (".yaml", ".yml"):
        c.warning(f"kqlwatch loads only *.yaml and *.yml rule files: rename {path.suffix} to {path.suffix.lower()} "
                  "or this file will not run", "file")  # fmt: skip
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            c.error(f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}", "file")
            return c
        c.text = path.read_text(encoding="utf-8")
    except OSError as exc:
        c.error(f"cannot read file: {exc.strerror or exc}", "file")
        return c
    except UnicodeDecodeError:
        c.error("file is not UTF-8 text", "file")
        return c
    loader = None
    try:
        check_shape(
            c.text, yaml.SafeLoader
        )  # before building anything: an alias bomb or deep nesting is refused here, fast
        loader = yaml.SafeLoader(c.text)
        root = loader.get_single_node()
        doc = loader.construct_document(root) if root is not None else None
    except YamlRefused as exc:
        c.result.findings.append(Finding(c.result.path, exc.line or 1, 1, ERROR, exc.reason, "yaml"))
        return c
    except (ValueError, OverflowError) as exc:  # a scalar YAML resolves but cannot build (2026-13-45)
        line = bad_scalar_line(c.text) or 1
        c.result.findings.append(Finding(c.result.path, line, 1, ERROR, f"a value YAML cannot read: {str(exc)[:200]}",
                                         "yaml"))  # fmt: skip
        return c
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        c.result.findings.append(Finding(c.result.path, line, col, ERROR, f"invalid YAML: {problem}", "yaml"))
        return c
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(root, yaml.MappingNode) or not isinstance(doc, dict):
        c.error("a rule file must be a YAML mapping (id, name, query, ...)", "yaml", root)
        return c
    c.doc = doc
    nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key is None:
            continue
        if key in nodes:
            c.error(f"duplicate key '{key}' (first at line {nodes[key][0].start_mark.line + 1}); "
                    "YAML keeps only the last", "yaml", key_node)  # fmt: skip
        nodes[key] = (key_node, value_node)
    c.nodes = nodes
    _check_schema(c)
    _check_loadable(c)
    return c


def _check_schema(c: _Checked) -> None:
    doc = c.doc
    if doc.get("kind") is not None:
        kind = str(doc["kind"])
        if kind not in KINDS:
            c.error(f"kind {kind!r} is not one of {', '.join(KINDS)} (the query-based rule kinds)", "kind",
                    c.node("kind"))  # fmt: skip
        c.result.kind = "nrt" if kind == "NRT" else "scheduled"
    elif doc.get("queryFrequency") is not None:
        c.result.kind = "scheduled"
    else:
        c.result.kind = "hunting"
    required = {"scheduled": SCHEDULED_REQUIRED, "nrt": NRT_REQUIRED}.get(c.result.kind, HUNTING_REQUIRED)
    what = {"scheduled": "a scheduled rule", "nrt": "an NRT rule"}.get(c.result.kind, "a hunting query")
    for key in required:
        if doc.get(key) is None:
            c.error(f"missing required field '{key}' (required in {what})", "required")
    if c.result.kind == "nrt":
        c.warning("kqlwatch does not run rules every minute: this NRT rule runs on kqlwatch's schedule "
                  "(queryFrequency, default 5m, over queryPeriod, default 1h)", "nrt", c.node("kind"))  # fmt: skip

    for key in ("name", "description"):
        value = doc.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            c.error(f"'{key}' must be non-empty text", "type", c.node(key))
    _check_id(c)
    _check_query(c)
    _check_severity(c)
    _check_schedule(c)
    _check_trigger(c)
    tactics = _check_tactics(c)
    _check_techniques(c, tactics)
    _check_connectors(c)
    _check_entities(c)
    _check_custom_details(c)
    _check_grouping_and_suppression(c)
    version = doc.get("version")
    if version is not None and not (isinstance(version, str) and _VERSION.match(version)):
        c.error(f"version {version!r} must be text in the form X.Y.Z (e.g. 1.0.0; quote it in YAML)", "version",
                c.node("version"))  # fmt: skip


def _check_id(c: _Checked) -> None:
    value = c.doc.get("id")
    if value is not None and not (isinstance(value, str) and _GUID.match(value.strip())):
        c.error(f"id {value!r} is not a GUID (e.g. {'a256f4ea-deec-4fcd-bdf3-63987638eed9'})", "id", c.node("id"))


def _check_query(c: _Checked) -> None:
    import yaml

    value, node = c.doc.get("query"), c.node("query")
    if value is None:
        return
    if not isinstance(value, str) or not isinstance(node, yaml.ScalarNode):
        c.error("'query' must be text", "type", node)
        return
    if not value.strip():
        c.error("'query' is empty", "query", node)
        return
    if len(value) > SENTINEL_QUERY_CHARS:
        c.warning(f"query is {len(value):,} characters; Sentinel's limit is {SENTINEL_QUERY_CHARS:,}", "query", node)
    key_node = c.nodes["query"][0]
    c.query = _Query(value, node, key_node.start_mark.column)


def _check_severity(c: _Checked) -> None:
    from shared.rules import SEVERITIES

    value = c.doc.get("severity")
    if value is not None and value not in SEVERITIES:
        c.error(f"severity {value!r} is not one of {', '.join(SEVERITIES)}", "severity", c.node("severity"))


def _duration(c: _Checked, key: str) -> timedelta | None:
    from shared.durations import format_duration, parse_duration

    value = c.doc.get(key)
    if value is None:
        return None
    try:
        parsed = parse_duration(str(value))
    except ValueError as exc:
        c.error(f"{key}: {exc}", "duration", c.node(key))
        return None
    except OverflowError:  # "99999999999d": more days than a timedelta holds
        c.error(f"{key}: {str(value)[:40]!r} is too long a duration", "duration", c.node(key))
        return None
    if key in ("queryFrequency", "queryPeriod") and not MIN_DURATION <= parsed <= MAX_DURATION:
        c.error(f"{key} {format_duration(parsed)} is outside Sentinel's range of 5m to 14d", "duration", c.node(key))
        return None
    return parsed


def _check_schedule(c: _Checked) -> None:
    from shared.durations import format_duration

    frequency = _duration(c, "queryFrequency")
    period = _duration(c, "queryPeriod")
    if frequency is None or period is None:
        return
    if period < frequency:
        c.error(f"queryPeriod {format_duration(period)} is shorter than queryFrequency {format_duration(frequency)}: "
                "rows between runs would never be queried", "schedule", c.node("queryPeriod"))  # fmt: skip
    if period >= LONG_PERIOD and frequency < LONG_PERIOD_MIN_FREQUENCY:
        c.error(f"a queryPeriod of 2d or more ({format_duration(period)}) needs a queryFrequency of 1h or more, "
                f"not {format_duration(frequency)} (Sentinel's limit)", "schedule",
                c.node("queryFrequency"))  # fmt: skip


def _check_trigger(c: _Checked) -> None:
    operator = c.doc.get("triggerOperator")
    if operator is not None:
        if not isinstance(operator, str):
            c.error(f"triggerOperator must be one of {', '.join(TRIGGER_OPERATORS)}, not a {type(operator).__name__}",
                    "trigger", c.node("triggerOperator"))  # fmt: skip
        elif operator in ARM_TRIGGER_OPERATORS:
            c.warning(f"triggerOperator {operator!r} is the ARM spelling; Sentinel YAML uses "
                      f"{ARM_TRIGGER_OPERATORS[operator]!r}", "trigger", c.node("triggerOperator"))  # fmt: skip
        elif operator not in TRIGGER_OPERATORS:
            c.error(f"triggerOperator {operator!r} is not one of {', '.join(TRIGGER_OPERATORS)}", "trigger",
                    c.node("triggerOperator"))  # fmt: skip
    threshold = c.doc.get("triggerThreshold")
    if threshold is not None and (
        not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= MAX_THRESHOLD
    ):
        c.error(f"triggerThreshold {threshold!r} must be a whole number from 0 to {MAX_THRESHOLD:,}", "trigger",
                c.node("triggerThreshold"))  # fmt: skip


def _list_of_text(c: _Checked, key: str) -> list[tuple[str, yaml.Node]]:
    """The items of a list-of-text field with their nodes; reports a wrong shape."""
    import yaml

    node = c.shaped(key, yaml.SequenceNode, f"'{key}' must be a list", "type")
    if node is None:
        return []
    items: list[tuple[str, yaml.Node]] = []
    for item in node.value:
        if isinstance(item, yaml.ScalarNode) and item.tag.endswith(":str") and item.value.strip():
            items.append((item.value.strip(), item))
        else:
            c.error(f"each entry of '{key}' must be a name", "type", item)
    return items


def _normalise(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).lower()


_TACTIC_BY_NORMAL = {_normalise(t): t for t in TACTICS}


def _check_tactics(c: _Checked) -> set[str]:
    """Report unknown tactics; return the rule's tactics, misspellings mapped to the name they were meant as."""
    tactics: set[str] = set()
    for name, node in _list_of_text(c, "tactics"):
        if name in TACTICS:
            tactics.add(name)
            continue
        meant = _TACTIC_BY_NORMAL.get(_normalise(name))
        if meant:
            tactics.add(meant)
            c.error(f"unknown tactic {name!r}: Sentinel spells it {meant!r}", "tactic", node)
        else:
            c.error(f"unknown tactic {name!r} (known: {', '.join(TACTICS)})", "tactic", node)
    return tactics


@cache
def technique_tactics() -> dict[str, tuple[str, ...]]:
    """ATT&CK technique id (no sub-technique) -> its tactics, from shared/schemas/mitre_techniques.json."""
    data = json.loads((SCHEMAS / "mitre_techniques.json").read_text(encoding="utf-8"))
    return {str(k): tuple(str(t) for t in v) for k, v in data["techniques"].items()}


def _check_techniques(c: _Checked, tactics: set[str]) -> None:
    known = technique_tactics()
    for technique, node in _list_of_text(c, "relevantTechniques"):
        if not _TECHNIQUE.match(technique):
            c.error(f"technique {technique!r} is not an ATT&CK id like T1566 or T1566.001", "technique", node)
            continue
        base = technique.split(".")[0]
        if base not in known:
            c.warning(f"technique {technique} is not in kqlwatch's ATT&CK table (shared/schemas/"
                      "mitre_techniques.json); its tactics were not checked", "technique", node)  # fmt: skip
            continue
        if not tactics.intersection(known[base]):
            needs = " or ".join(known[base])
            c.error(f"technique {technique} belongs to {needs}; add {'it' if len(known[base]) == 1 else 'one'} "
                    "to tactics", "technique-tactic", node)  # fmt: skip


def _check_connectors(c: _Checked) -> None:
    import yaml

    node = c.shaped(
        "requiredDataConnectors",
        yaml.SequenceNode,
        "'requiredDataConnectors' must be a list of {connectorId, dataTypes}",
        "type",
    )
    if node is None:
        return
    for item in node.value:
        fields = _mapping(item)
        connector = fields.get("connectorId")
        if connector is None or not _is_text(connector[1]):
            c.error("each requiredDataConnectors entry needs a connectorId", "connector", item)
            continue
        data_types = fields.get("dataTypes")
        if data_types is None or not isinstance(data_types[1], yaml.SequenceNode):
            c.error("each requiredDataConnectors entry needs a dataTypes list", "connector", item)
        connector_id = connector[1].value
        if connector_id not in CONNECTOR_IDS:
            c.warning(f"data connector id {connector_id!r} is not one kqlwatch knows", "connector", connector[1])


def _check_entities(c: _Checked) -> None:
    import yaml

    node = c.shaped("entityMappings", yaml.SequenceNode, "'entityMappings' must be a list", "entity")
    if node is None:
        return
    if not 1 <= len(node.value) <= 5:
        c.error(f"entityMappings has {len(node.value)} entries; Sentinel allows 1 to 5", "entity", node)
    for mapping in node.value:
        fields = _mapping(mapping)
        entity = fields.get("entityType")
        entity_type = entity[1].value if entity and _is_text(entity[1]) else None
        if entity_type is None:
            c.error("each entityMappings entry needs an entityType", "entity", mapping)
        elif entity_type not in ENTITY_IDENTIFIERS:
            c.error(f"entityType {entity_type!r} is not one of {', '.join(ENTITY_IDENTIFIERS)}", "entity",
                    entity[1] if entity else mapping)  # fmt: skip
        field_list = fields.get("fieldMappings")
        if field_list is None or not isinstance(field_list[1], yaml.SequenceNode):
            c.error("each entityMappings entry needs a fieldMappings list", "entity", mapping)
            continue
        items = field_list[1].value
        if not 1 <= len(items) <= 3:
            c.error(f"fieldMappings has {len(items)} entries; Sentinel allows 1 to 3", "entity", field_list[1])
        spec = ENTITY_IDENTIFIERS.get(entity_type or "")
        used: set[str] = set()
        for item in items:
            pair = _mapping(item)
            identifier = pair.get("identifier")
            column = pair.get("columnName")
            if column is None or not _is_text(column[1]) or not column[1].value:
                c.error("each fieldMappings entry needs a columnName", "entity", item)
            elif not _COLUMN.match(column[1].value):
                c.error(f"columnName {column[1].value!r} must be a column name (letters, digits, _)", "entity",
                        column[1])  # fmt: skip
            if identifier is None or not _is_text(identifier[1]):
                c.error("each fieldMappings entry needs an identifier", "entity", item)
                continue
            name = identifier[1].value
            if spec and name not in spec[0]:
                c.error(f"identifier {name!r} is not valid for entity type {entity_type} (valid: "
                        f"{', '.join(spec[0])})", "entity", identifier[1])  # fmt: skip
            elif name in used:
                c.error(f"identifier {name!r} is mapped twice in this entity", "entity", identifier[1])
            used.add(name)
        if spec and used and not any(set(combo) <= used for combo in spec[1]):
            combos = "; ".join(" + ".join(combo) for combo in spec[1])
            c.error(f"the {entity_type} mapping needs one of these identifiers: {combos}", "entity", mapping)


def _check_custom_details(c: _Checked) -> None:
    import yaml

    node = c.shaped(
        "customDetails", yaml.MappingNode, "'customDetails' must be a mapping of name: column", "custom-details"
    )
    if node is None:
        return
    if len(node.value) > 20:
        c.error(f"customDetails has {len(node.value)} entries; Sentinel allows 20", "custom-details", node)
    for key, value in node.value:
        if not _is_text(key) or not _DETAIL_KEY.match(key.value) or len(key.value) > 20:
            c.error(f"customDetails name {getattr(key, 'value', key)!r} must start with a letter, use only letters, "
                    "digits and _, and have at most 20 characters", "custom-details", key)  # fmt: skip
        if not _is_text(value) or not _COLUMN.match(value.value):
            c.error(f"customDetails value {getattr(value, 'value', value)!r} must be a column name", "custom-details",
                    value)  # fmt: skip


def _check_grouping_and_suppression(c: _Checked) -> None:
    grouping = c.doc.get("eventGroupingSettings")
    if grouping is not None:
        kind = grouping.get("aggregationKind") if isinstance(grouping, dict) else None
        if kind not in AGGREGATIONS:
            c.error(f"eventGroupingSettings.aggregationKind must be one of {', '.join(AGGREGATIONS)}", "grouping",
                    c.node("eventGroupingSettings"))  # fmt: skip
    enabled = c.doc.get("suppressionEnabled")
    if enabled is not None and not isinstance(enabled, bool):
        c.error("suppressionEnabled must be true or false", "suppression", c.node("suppressionEnabled"))
    suppression = _duration(c, "suppressionDuration")
    if suppression is not None and enabled is True and not MIN_DURATION <= suppression <= MAX_SUPPRESSION:
        c.error("suppressionDuration must be from 5m to 24h", "suppression", c.node("suppressionDuration"))


def _check_loadable(c: _Checked) -> None:
    """kqlwatch's own loader must accept the file too (its `kqlwatch:` section, its limits)."""
    from shared.errors import RuleError
    from shared.ingestion import for_rule
    from shared.rules import parse_rule

    if c.result.errors:
        return  # the loader stops at the first problem, most likely one reported above
    try:
        rule = parse_rule(c.text, c.result.path)
        choice = for_rule(rule)
        c.result.window = f"{choice.mode} ({choice.reason})"
    except RuleError as exc:
        c.result.findings.append(
            Finding(c.result.path, exc.line or 1, 1, ERROR, f"kqlwatch cannot load this rule: {exc.reason}", "kqlwatch")
        )
    except Exception as exc:  # a loader bug must not hide the other files' results
        c.error(f"kqlwatch's rule loader failed: {type(exc).__name__}: {exc}", "kqlwatch")


def _check_duplicate_ids(checked: Sequence[_Checked]) -> None:
    first: dict[str, str] = {}
    for c in checked:
        value = c.doc.get("id")
        if not isinstance(value, str) or not value.strip():
            continue
        key = value.strip().lower()
        if key in first:
            c.error(f"duplicate id {value.strip()} (first used in {first[key]})", "duplicate-id", c.node("id"))
        else:
            first[key] = c.result.path


# ------------------------------------------------------------------------------------------------ the KQL check


def check_kql(queries: Sequence[str], *, timeout: float | None = None) -> list[KqlResult]:
    """Check queries with Kusto.Language against the shipped table schemas, in one Node process."""
    from shared.schemas import known_tables, table_schema

    if not queries:
        return []
    tables = {name: table_schema(name) or {} for name in known_tables()}
    return run_kusto_validate(queries, tables, timeout=timeout)


def run_kusto_validate(
    queries: Sequence[str], tables: Mapping[str, Mapping[str, str]], *, timeout: float | None = None
) -> list[KqlResult]:
    """Run tools/kusto-validate.js once over `queries`; KqlwatchError when Node or the package is missing."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        raise KqlwatchError("the KQL check needs Node.js 20+ on PATH (node not found); install it, then run npm ci "
                            f"in {ROOT} - or skip the check with --no-kql")  # fmt: skip
    if not KUSTO_PACKAGE.is_dir() or not KUSTO_SCRIPT.is_file():
        raise KqlwatchError(f"the KQL check needs @kusto/language-service-next in {ROOT / 'node_modules'}: run npm ci "
                            f"in {ROOT} - or skip the check with --no-kql")  # fmt: skip
    payload = json.dumps(
        {"tables": tables, "queries": [{"id": i, "text": q} for i, q in enumerate(queries)]}, ensure_ascii=False
    )
    limit = timeout if timeout is not None else 60.0 + 2.0 * len(queries)
    try:
        proc = subprocess.run(
            [node, str(KUSTO_SCRIPT)], input=payload, capture_output=True, text=True, encoding="utf-8",
            timeout=limit, cwd=ROOT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise KqlwatchError(f"the KQL check (tools/kusto-validate.js) did not finish within {limit:.0f} s") from None
    except OSError as exc:
        raise KqlwatchError(f"cannot run node for the KQL check: {exc}") from None
    if proc.returncode != 0:
        detail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        hint = "; run npm ci" if "Cannot find module" in proc.stderr else ""
        raise KqlwatchError(f"the KQL check failed (tools/kusto-validate.js exit {proc.returncode}): {detail}{hint}")
    try:
        results = json.loads(proc.stdout)["results"]
    except (ValueError, KeyError, TypeError):
        raise KqlwatchError("the KQL check (tools/kusto-validate.js) printed no result") from None
    if len(results) != len(queries):
        raise KqlwatchError(f"the KQL check returned {len(results)} results for {len(queries)} queries")
    return [
        KqlResult(
            diagnostics=list(r.get("diagnostics") or []),
            tables=list(r.get("tables") or []),
            tables_without_schema=list(r.get("tablesWithoutSchema") or []),
            columns=r.get("columns"),
        )
        for r in sorted(results, key=lambda r: int(r["id"]))
    ]


def _apply_kql(c: _Checked, result: KqlResult) -> None:
    import difflib

    from shared.schemas import known_tables

    assert c.query is not None
    locate = query_locator(c.text, c.query.node, c.query.value, c.query.key_col)
    path = c.result.path
    for d in result.diagnostics:
        line, col = locate(_code_point_offset(c.query.value, int(d.get("start") or 0)))
        severity = ERROR if d.get("severity") == "Error" else WARNING
        message = str(d.get("message", "")).strip()
        table = d.get("table")
        if d.get("code") == "no-schema" and isinstance(table, str):
            close = difflib.get_close_matches(table, known_tables(), n=1, cutoff=0.85)
            if close:
                message += f" (did you mean {close[0]}?)"
        c.result.findings.append(Finding(path, line, col, severity, message, str(d.get("code") or "kql")))
    defender_only = _defender_only_tables()
    for table in result.tables:
        if table in defender_only:
            c.warning(f"table {table} is documented for Defender XDR advanced hunting only; kqlwatch queries Log "
                      "Analytics, where it may not exist", "defender-only", c.query.node)  # fmt: skip
    if result.columns is not None:
        _check_output_columns(c, set(result.columns))


def _check_output_columns(c: _Checked, columns: set[str]) -> None:
    """Entity mappings, custom details, alert placeholders and kqlwatch.dedupeKey must name output columns."""
    import yaml

    def check(name: str, node: yaml.Node, what: str) -> None:
        if name not in columns:
            c.error(f"{what} column {name!r} is not in the query's output ({', '.join(sorted(columns))})",
                    "column", node)  # fmt: skip

    entity_node = c.node("entityMappings")
    if isinstance(entity_node, yaml.SequenceNode):
        for mapping in entity_node.value:
            fields = _mapping(mapping).get("fieldMappings")
            if fields and isinstance(fields[1], yaml.SequenceNode):
                for item in fields[1].value:
                    column = _mapping(item).get("columnName")
                    if column and _is_text(column[1]) and column[1].value:
                        check(column[1].value, column[1], "entity mapping")
    details = c.node("customDetails")
    if isinstance(details, yaml.MappingNode):
        for _key, value in details.value:
            if _is_text(value):
                check(value.value, value, "customDetails")
    override = c.node("alertDetailsOverride")
    if isinstance(override, yaml.MappingNode):
        for key, value in override.value:
            if _is_text(key) and key.value.startswith("alert") and key.value.endswith("Format") and _is_text(value):
                for placeholder in _PLACEHOLDER.findall(value.value):
                    check(placeholder, value, f"alertDetailsOverride.{key.value}")
    extension = c.node("kqlwatch")
    dedupe = _mapping(extension).get("dedupeKey") if extension is not None else None
    if dedupe and isinstance(dedupe[1], yaml.SequenceNode):
        for item in dedupe[1].value:
            if _is_text(item):
                check(item.value, item, "kqlwatch.dedupeKey")


@cache
def _defender_only_tables() -> frozenset[str]:
    """Tables whose schema file says `"logAnalytics": false` (documented for Defender XDR advanced hunting only)."""
    found = set()
    for path in SCHEMAS.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "columns" in data and data.get("logAnalytics") is False:
            found.add(path.stem)
    return frozenset(found)


# ------------------------------------------------------------------------------- query offsets -> file positions


def query_locator(text: str, node: yaml.ScalarNode, value: str, key_col: int = 0) -> Callable[[int], tuple[int, int]]:
    """Map an offset in a scalar's value to its (line, column) in the file, both 1-based.

    Exact for block scalars (`|`, `|-`, `>`, ...) and for single-line plain or quoted scalars; otherwise (multi-line
    flow scalars, escapes) the scalar's start.
    """
    start = (node.start_mark.line + 1, node.start_mark.column + 1)
    pieces = None
    if node.style in ("|", ">"):
        pieces = _block_pieces(text, node, value, key_col)
    elif node.start_mark.line == node.end_mark.line:
        pieces = _inline_pieces(text, node, value)
    if not pieces:
        return lambda offset: start
    starts = [p[0] for p in pieces]

    def locate(offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(value) - 1 if value else 0))
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        piece_start, line, col, length = pieces[i]
        return line + 1, col + 1 + max(0, min(offset - piece_start, length - 1))

    return locate


_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
_BLOCK_HEADER = re.compile(r"[|>]([1-9][+-]?|[+-][1-9]?)?")


def _block_pieces(text: str, node: yaml.ScalarNode, value: str, key_col: int) -> list[tuple[int, int, int, int]]:
    """(value offset, file line, file column, length) of each content line of a block scalar, as PyYAML folds it;
    [] when the reconstruction does not reproduce the value."""
    lines = _LINE_BREAK.split(text)
    header_line = node.start_mark.line
    header = _BLOCK_HEADER.match(lines[header_line], node.start_mark.column) if header_line < len(lines) else None
    if header is None:
        return []
    digits = [ch for ch in header.group(1) or "" if ch.isdigit()]
    indent = key_col + int(digits[0]) if digits else None
    folded = node.style == ">"
    body = lines[header_line + 1 :]
    if indent is None:
        first = next((ln for ln in body if ln.strip()), "")
        indent = len(first) - len(first.lstrip(" "))
    if indent <= key_col and not digits:
        return []
    pieces: list[tuple[int, int, int, int]] = []
    out: list[str] = []
    length = 0
    breaks = 0
    previous_leading_text: bool | None = None
    for i, line in enumerate(body):
        spaces = len(line) - len(line.lstrip(" "))
        if spaces == len(line) and spaces <= indent:
            breaks += 1  # an empty line
            continue
        if spaces < indent:
            break  # the block ended
        content = line[indent:]
        leading_text = content[:1] not in (" ", "\t")
        if previous_leading_text is None:
            joint = "\n" * breaks
        elif folded and previous_leading_text and leading_text:
            joint = " " if breaks == 0 else "\n" * breaks
        else:
            joint = "\n" * (1 + breaks)
        out.append(joint)
        length += len(joint)
        pieces.append((length, header_line + 1 + i, indent, len(content)))
        out.append(content)
        length += len(content)
        breaks = 0
        previous_leading_text = leading_text
    rebuilt = "".join(out)
    if not value.startswith(rebuilt) or value[len(rebuilt) :].strip("\n"):
        return []
    return pieces


def _inline_pieces(text: str, node: yaml.ScalarNode, value: str) -> list[tuple[int, int, int, int]]:
    line, col = node.start_mark.line, node.start_mark.column
    source = text[node.start_mark.index : node.end_mark.index]
    if node.style is None:  # plain
        return [(0, line, col, len(value))] if source.startswith(value) else []
    if node.style == "'" and "''" not in source and source[1:-1] == value:
        return [(0, line, col + 1, len(value))]
    if node.style == '"' and "\\" not in source and source[1:-1] == value:
        return [(0, line, col + 1, len(value))]
    return []


# ------------------------------------------------------------------------------------------------------ helpers


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def _is_text(node: yaml.Node | None) -> bool:
    import yaml

    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str")


def _mapping(node: yaml.Node | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _code_point_offset(text: str, utf16_offset: int) -> int:
    """Kusto.Language (JavaScript) counts UTF-16 code units; Python strings count code points."""
    if utf16_offset <= 0 or all(ord(ch) <= 0xFFFF for ch in text[:utf16_offset]):
        return utf16_offset
    units = 0
    for index, ch in enumerate(text):
        if units >= utf16_offset:
            return index
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text)


def _finding_order(f: Finding) -> tuple[int, int]:
    return f.line, f.col
