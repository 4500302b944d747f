#!/usr/bin/env node
// Checks KQL queries offline with Microsoft's Kusto.Language parser (@kusto/language-service-next).
//
// stdin:  {"tables": {"EmailEvents": {"NetworkMessageId": "string", ...}, ...},
//          "queries": [{"id": <any>, "text": "EmailEvents | where ..."}]}
// stdout: {"results": [{"id": <as given>,
//                       "diagnostics": [{"code", "message", "severity", "start", "length"}],
//                       "tables": ["EmailEvents", ...], "tablesWithoutSchema": ["X", ...],
//                       "columns": ["Col", ...] | null}]}
//
// - Every Kusto error or warning is passed through with its code (KS142 unknown column, KS211 unknown function,
//   KS106 type mismatch, ...) and its offset and length in the query text.
// - A table with no schema here becomes an *open* table (any column, type unknown) and the query is analysed
//   again, so the errors that only follow from the missing schema are not reported; instead the result lists the
//   table under tablesWithoutSchema and carries one "no-schema" warning at its first reference.
// - _GetWatchlist(alias) (a Microsoft Sentinel workspace function) returns an open table. An unknown ASIM parser
//   (_Im_*, _ASim_*: workspace functions) is a "no-schema" warning rather than an unknown-function error.
// - tables: the tables with a schema that the query reads.
// - columns: the query's output columns, or null when they are not all known (open tables, errors).
// One process checks every query: loading the parser and its first analysis cost ~1.5 s, a query 10-50 ms.
"use strict";

const fs = require("fs");

require("@kusto/language-service-next/bridge.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.js");

/* global Kusto */
const L = Kusto.Language;
const S = L.Symbols;

const UNKNOWN_TABLE = "KS204"; // The name 'X' does not refer to any known table, tabular variable or function.
const UNKNOWN_FUZZY_TABLE = "KS205"; // The fuzzy name 'X' does not refer to any known ... table (union isfuzzy).
const MAX_ROUNDS = 20; // each round only adds tables; this bounds a pathological query
const OPEN_TABLE = "__kqlwatch_open_table";
const UNKNOWN_FUNCTION = "KS211"; // The name 'X' does not refer to any known function.
const ASIM = /^_(Im|ASim)_\w+$/;

function scalarType(name) {
  return S.ScalarTypes.GetSymbol(String(name)) || S.ScalarTypes.Dynamic;
}

function tableSymbol(name, columns) {
  const cols = Object.entries(columns).map(([col, type]) => new S.ColumnSymbol(col, scalarType(type)));
  return new S.TableSymbol.$ctor4(name, cols);
}

function openTable(name) {
  return new S.TableSymbol.$ctor4(name, []).WithIsOpen(true);
}

function sentinelFunctions() {
  return [
    openTable(OPEN_TABLE),
    new S.FunctionSymbol.$ctor16(
      "_GetWatchlist",
      "(watchlistAlias:string, keys:dynamic=dynamic(null))",
      `{ ${OPEN_TABLE} }`,
      "Microsoft Sentinel watchlist",
    ),
  ];
}

function globalsFor(symbols) {
  return L.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.ctor("workspace", symbols));
}

function listOf(netList) {
  const out = [];
  if (!netList) return out;
  for (let i = 0; i < netList.Count; i++) out.push(netList.getItem(i));
  return out;
}

// The table a KS204/KS205 diagnostic is about: the referenced text, unquoted (['My Table'] -> My Table).
function referencedName(text, d) {
  const raw = text.substr(d.Start, d.Length).trim();
  const quoted = /^\[\s*(['"])(.*)\1\s*\]$/s.exec(raw);
  if (quoted) return quoted[2];
  if (raw) return raw;
  const message = /name '([^']+)'/.exec(d.Message || "");
  return message ? message[1] : "";
}

function outputColumns(code) {
  const type = code.ResultType;
  if (!type || !(type instanceof S.TableSymbol) || type.IsOpen) return null;
  return listOf(type.Columns).map((c) => c.Name);
}

function referencedTables(code, known) {
  const names = new Set();
  for (const node of listOf(code.Syntax.GetDescendants(L.Syntax.NameReference))) {
    const symbol = node.ReferencedSymbol;
    if (symbol instanceof S.TableSymbol && known.has(symbol.Name)) names.add(symbol.Name);
  }
  return [...names];
}

function analyze(text, known, baseSymbols, baseGlobals) {
  const missing = new Map(); // table name -> the first diagnostic about it
  let symbols = baseSymbols;
  let globals = baseGlobals;
  let code = null;
  let diagnostics = [];
  for (let round = 0; round < MAX_ROUNDS; round++) {
    code = L.KustoCode.ParseAndAnalyze(text, globals);
    diagnostics = listOf(code.GetDiagnostics());
    const added = [];
    for (const d of diagnostics) {
      if (d.Code !== UNKNOWN_TABLE && d.Code !== UNKNOWN_FUZZY_TABLE) continue;
      const name = referencedName(text, d);
      if (!name || known.has(name) || missing.has(name)) continue;
      missing.set(name, d);
      added.push(openTable(name));
    }
    if (added.length === 0) break;
    symbols = symbols.concat(added);
    globals = globalsFor(symbols);
  }
  const out = [];
  for (const [name, d] of missing) {
    const what = ASIM.test(name) ? "ASIM parser" : "table";
    out.push({
      code: "no-schema",
      severity: "Warning",
      message: `${what} ${name} has no schema in kqlwatch; its columns were not checked`,
      start: d.Start,
      length: d.Length,
      table: name,
    });
  }
  let errors = 0;
  let unchecked = false;
  for (const d of diagnostics) {
    const severity = String(d.Severity);
    if (severity !== "Error" && severity !== "Warning") continue;
    const name = d.Code === UNKNOWN_FUNCTION ? text.substr(d.Start, d.Length) : "";
    if (ASIM.test(name)) {
      out.push({
        code: "no-schema",
        severity: "Warning",
        message: `ASIM parser ${name} has no definition in kqlwatch; its result was not checked`,
        start: d.Start,
        length: d.Length,
      });
      unchecked = true;
      continue;
    }
    if (severity === "Error") errors++;
    out.push({
      code: d.Code,
      severity,
      message: d.Message,
      start: d.HasLocation ? d.Start : 0,
      length: d.HasLocation ? d.Length : 0,
    });
  }
  return {
    diagnostics: out,
    tables: referencedTables(code, known),
    tablesWithoutSchema: [...missing.keys()],
    columns: errors === 0 && missing.size === 0 && !unchecked ? outputColumns(code) : null,
  };
}

function main() {
  const request = JSON.parse(fs.readFileSync(0, "utf8") || "{}");
  const tableSpecs = request.tables || {};
  const known = new Set(Object.keys(tableSpecs));
  const baseSymbols = Object.entries(tableSpecs)
    .map(([name, columns]) => tableSymbol(name, columns))
    .concat(sentinelFunctions());
  const baseGlobals = globalsFor(baseSymbols);
  const results = [];
  for (const query of request.queries || []) {
    try {
      results.push({ id: query.id, ...analyze(String(query.text ?? ""), known, baseSymbols, baseGlobals) });
    } catch (err) {
      results.push({
        id: query.id,
        diagnostics: [
          {
            code: "internal",
            severity: "Error",
            message: `Kusto.Language failed on this query: ${err && err.message ? err.message : err}`,
            start: 0,
            length: 0,
          },
        ],
        tables: [],
        tablesWithoutSchema: [],
        columns: null,
      });
    }
  }
  process.stdout.write(JSON.stringify({ results }));
}

main();
