"""Write the Kibana 8 saved objects `logpipe kibana import` loads (deploy/kibana/logpipe.ndjson).

Why a script: saved objects hold JSON inside JSON strings (visState, panelsJSON,
searchSourceJSON), which nobody should edit by hand. Change the objects here and
run ``python scripts/gen_kibana_objects.py``; tests/test_kibana.py fails when the
file and this script disagree, and checks every reference resolves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# deploy/kibana/logpipe.ndjson is a link to this file, which the package carries.
OUT = Path(__file__).resolve().parents[1] / "src" / "logpipe" / "data" / "kibana.ndjson"

DV = "logpipe-data-view"
ERRORS = "Type:(error or critical)"
CORE = "8.0.0"


def dumps(o):
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False)


def meta(query="", index=True):
    s = {"query": {"query": query, "language": "kuery"}, "filter": []}
    if index:
        s["indexRefName"] = "kibanaSavedObjectMeta.searchSourceJSON.index"
    return {"searchSourceJSON": dumps(s)}


def dv_ref():
    return [{"id": DV, "name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern"}]


def obj(type_, id_, attributes, references):
    return {
        "type": type_,
        "id": id_,
        "attributes": attributes,
        "references": references,
        "coreMigrationVersion": CORE,
        "migrationVersion": {type_: CORE},
    }


objects = []
trace_url = (
    "/app/discover#/view/logpipe-search?_g=(time:(from:now-7d,to:now))"
    "&_a=(query:(language:kuery,query:'TraceId:{{value}}'))"
)
field_formats = {
    "Time": {"id": "date", "params": {"pattern": "YYYY-MM-DD HH:mm:ss.SSS"}},
    "TraceId": {
        "id": "url",
        "params": {"type": "a", "urlTemplate": trace_url, "labelTemplate": "{{value}}", "openLinkInCurrentTab": True},
    },
    "Type": {
        "id": "color",
        "params": {
            "fieldType": "string",
            "colors": [
                {"range": "-Infinity:Infinity", "regex": "error|critical", "text": "#FFFFFF", "background": "#BD271E"},
                {"range": "-Infinity:Infinity", "regex": "warning", "text": "#000000", "background": "#F5A700"},
            ],
        },
    },
}
objects.append(
    obj(
        "index-pattern",
        DV,
        {
            "title": "logpipe-*",
            "timeFieldName": "Time",
            "fieldFormatMap": dumps(field_formats),
            "fields": "[]",
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "typeMeta": "{}",
            "allowNoIndex": True,
        },
        [],
    )
)

COLUMNS = ["Type", "Service", "FuncName", "Msg", "TraceId"]
for id_, title, query, desc in [
    ("logpipe-search", "logpipe: records", "", "Every KafkaLog record, newest first."),
    ("logpipe-errors", "logpipe: errors", ERRORS, "Records of Type error or critical."),
]:
    objects.append(
        obj(
            "search",
            id_,
            {
                "title": title,
                "description": desc,
                "columns": COLUMNS,
                "sort": [["Time", "desc"]],
                "grid": {},
                "hideChart": False,
                "kibanaSavedObjectMeta": meta(query),
            },
            dv_ref(),
        )
    )


def vis(id_, title, vis_type, params, aggs, query="", desc=""):
    state = {"title": title, "type": vis_type, "params": params, "aggs": aggs}
    return obj(
        "visualization",
        id_,
        {
            "title": title,
            "description": desc,
            "visState": dumps(state),
            "uiStateJSON": "{}",
            "version": 1,
            "kibanaSavedObjectMeta": meta(query),
        },
        dv_ref(),
    )


count = {"id": "1", "enabled": True, "type": "count", "schema": "metric", "params": {}}


def terms(id_, field, schema, size, label):
    return {
        "id": id_,
        "enabled": True,
        "type": "terms",
        "schema": schema,
        "params": {
            "field": field,
            "orderBy": "1",
            "order": "desc",
            "size": size,
            "otherBucket": False,
            "otherBucketLabel": "Other",
            "missingBucket": False,
            "missingBucketLabel": "Missing",
            "customLabel": label,
        },
    }


histogram_params = {
    "type": "histogram",
    "addTooltip": True,
    "addLegend": True,
    "legendPosition": "right",
    "times": [],
    "addTimeMarker": False,
    "detailedTooltip": True,
    "palette": {"type": "palette", "name": "default"},
    "grid": {"categoryLines": False},
    "categoryAxes": [
        {
            "id": "CategoryAxis-1",
            "type": "category",
            "position": "bottom",
            "show": True,
            "style": {},
            "scale": {"type": "linear"},
            "labels": {"show": True, "filter": True, "truncate": 100},
            "title": {},
        }
    ],
    "valueAxes": [
        {
            "id": "ValueAxis-1",
            "name": "LeftAxis-1",
            "type": "value",
            "position": "left",
            "show": True,
            "style": {},
            "scale": {"type": "linear", "mode": "normal"},
            "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
            "title": {"text": "Events"},
        }
    ],
    "seriesParams": [
        {
            "show": True,
            "type": "histogram",
            "mode": "stacked",
            "data": {"label": "Events", "id": "1"},
            "valueAxis": "ValueAxis-1",
            "drawLinesBetweenPoints": True,
            "lineWidth": 2,
            "showCircles": True,
            "interpolate": "linear",
        }
    ],
    "labels": {"show": False},
    "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
}
objects.append(
    vis(
        "logpipe-events-per-type",
        "logpipe: events per Type over time",
        "histogram",
        histogram_params,
        [
            {**count, "params": {"customLabel": "Events"}},
            {
                "id": "2",
                "enabled": True,
                "type": "date_histogram",
                "schema": "segment",
                "params": {
                    "field": "Time",
                    "useNormalizedEsInterval": True,
                    "scaleMetricValues": False,
                    "interval": "auto",
                    "drop_partials": False,
                    "min_doc_count": 1,
                    "extended_bounds": {},
                    "customLabel": "Time",
                },
            },
            terms("3", "Type", "group", 10, "Type"),
        ],
        desc="Stacked count of records per Type (info, warning, error, ...).",
    )
)

table_params = {
    "perPage": 10,
    "showPartialRows": False,
    "showMetricsAtAllLevels": False,
    "showTotal": False,
    "totalFunc": "sum",
    "percentageCol": "",
    "autoFitRowToContent": False,
}
objects.append(
    vis(
        "logpipe-top-funcname-errors",
        "logpipe: top FuncName by errors",
        "table",
        table_params,
        [{**count, "params": {"customLabel": "Errors"}}, terms("2", "FuncName", "bucket", 10, "FuncName")],
        query=ERRORS,
        desc="The functions that log the most errors.",
    )
)
pie_params = {
    "type": "pie",
    "addTooltip": True,
    "legendDisplay": "show",
    "legendPosition": "right",
    "isDonut": True,
    "nestedLegend": False,
    "distinctColors": False,
    "truncateLegend": True,
    "maxLegendLines": 1,
    "palette": {"type": "palette", "name": "default"},
    "labels": {
        "show": True,
        "values": True,
        "last_level": True,
        "truncate": 100,
        "position": "default",
        "valuesFormat": "percent",
        "percentDecimals": 1,
    },
}
objects.append(
    vis(
        "logpipe-errors-by-service",
        "logpipe: errors by Service",
        "pie",
        pie_params,
        [{**count, "params": {"customLabel": "Errors"}}, terms("2", "Service", "segment", 10, "Service")],
        query=ERRORS,
        desc="Share of errors per Service.",
    )
)
objects.append(
    vis(
        "logpipe-error-traces",
        "logpipe: traces with errors (click a TraceId to drill down)",
        "table",
        table_params,
        [{**count, "params": {"customLabel": "Errors"}}, terms("2", "TraceId", "bucket", 20, "TraceId")],
        query=ERRORS + ' and not TraceId:""',
        desc="Click a TraceId to filter the dashboard (and the records below) to that trace.",
    )
)

panels = [
    ("logpipe-events-per-type", "visualization", 0, 0, 48, 12),
    ("logpipe-top-funcname-errors", "visualization", 0, 12, 16, 14),
    ("logpipe-errors-by-service", "visualization", 16, 12, 16, 14),
    ("logpipe-error-traces", "visualization", 32, 12, 16, 14),
    ("logpipe-search", "search", 0, 26, 48, 20),
]
panels_json, refs = [], []
for i, (id_, type_, x, y, w, h) in enumerate(panels, start=1):
    p = str(i)
    panels_json.append(
        {
            "version": CORE,
            "type": type_,
            "gridData": {"x": x, "y": y, "w": w, "h": h, "i": p},
            "panelIndex": p,
            "embeddableConfig": {"enhancements": {}},
            "panelRefName": f"panel_{p}",
        }
    )
    refs.append({"name": f"{p}:panel_{p}", "type": type_, "id": id_})
objects.append(
    obj(
        "dashboard",
        "logpipe-overview",
        {
            "title": "logpipe: overview",
            "description": (
                "KafkaLog records shipped by logpipe: events per Type, where errors come from, and their traces."
            ),
            "panelsJSON": dumps(panels_json),
            "optionsJSON": dumps(
                {
                    "useMargins": True,
                    "syncColors": False,
                    "syncCursor": True,
                    "syncTooltips": False,
                    "hidePanelTitles": False,
                }
            ),
            "version": 1,
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 30000},
            "kibanaSavedObjectMeta": meta("", index=False),
        },
        refs,
    )
)


def render() -> str:
    """The NDJSON text: one saved object per line, referenced objects before those that refer to them."""
    return "".join(dumps(o) + "\n" for o in objects)


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
