//! The operator's console at `/status.html` (and `/status` for a browser): a server-rendered
//! page that stays small at 10,000 targets. A summary by state (each a filter link) and by
//! reconnect reason, the fleet's members and what each owns, the last hour's charts (inline SVG
//! from the in-memory history), and one page of the target table, filtered, sorted and paged on
//! the server with the same parameters as `/status.json`. No script, no external resource: it
//! works from a plain link, and reloads itself every 10 s keeping its query.
//!
//! What it must NOT do: render every target (one page only), or put text it did not escape into
//! the page (ids, ids of events and errors come from upstreams).

use std::fmt::Write as _;

use html_escape::{encode_double_quoted_attribute as attr, encode_text};

use super::charts;
use super::fleet_view::FleetView;
use super::history::Sample;
use super::query::{SortKey, Table, TableQuery};

/// Rows per page when the query names none.
pub const PER_PAGE: usize = 100;

/// What one page shows.
pub struct Page<'a> {
    /// Whether the worker is ready.
    pub ready: bool,
    /// The table's page and counts.
    pub table: &'a Table,
    /// The query it answers (links keep it).
    pub query: &'a TableQuery,
    /// The last hour's samples, oldest first.
    pub history: &'a [Sample],
    /// The fleet, when the worker is in one.
    pub fleet: Option<&'a FleetView>,
    /// Problems with target definitions (invalid files or records, ids defined twice), one
    /// line each.
    pub definition_problems: &'a [String],
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.2em;color:#222}\
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.1em;margin:1em 0 .4em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .55em;text-align:left}\
th{background:#f4f4f4}th a{color:inherit}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.streaming{color:#070}.backoff,.connecting,.starting{color:#a60}.stopped{color:#a00}\
.cards{display:flex;flex-wrap:wrap;gap:.5em}.card{border:1px solid #ccc;border-radius:4px;padding:.4em .7em;\
text-decoration:none;color:inherit;min-width:6em}.card b{display:block;font-size:1.3em}\
.card.on{border-color:#06c;background:#eef5ff}.charts{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:0}figcaption{font-size:.9em;color:#555}svg{background:#fafafa;border:1px solid #ddd}\
.pager a,.pager span{margin-right:.8em}form{margin:.6em 0}.muted{color:#777}";

/// The page's HTML.
pub fn render(page: &Page<'_>) -> String {
    let table = page.table;
    let mut html = String::with_capacity(16 * 1024 + table.targets.len() * 400);
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
         <title>sluice worker</title><style>{STYLE}</style></head><body>\
         <h1>sluice worker</h1><p id=\"overview\">{} targets, {}, {} events received</p>",
        table.summary.total,
        if page.ready { "ready" } else { "starting" },
        table.summary.events,
    );
    summary(&mut html, page);
    if let Some(fleet) = page.fleet {
        fleet_section(&mut html, fleet);
    }
    if !page.definition_problems.is_empty() {
        html.push_str("<h2>Definition problems</h2><ul id=\"definition-problems\">");
        for problem in page.definition_problems {
            let _ = write!(html, "<li>{}</li>", encode_text(problem));
        }
        html.push_str("</ul>");
    }
    html.push_str("<h2>Last hour</h2><div class=\"charts\">");
    charts::all(&mut html, page.history);
    html.push_str("</div>");
    targets(&mut html, page);
    html.push_str("</body></html>\n");
    html
}

fn summary(html: &mut String, page: &Page<'_>) {
    let query = page.query;
    let summary = &page.table.summary;
    html.push_str("<h2>Targets by state</h2><div class=\"cards\" id=\"states\">");
    let all = TableQuery {
        state: None,
        page: 1,
        ..query.clone()
    };
    let _ = write!(
        html,
        "<a class=\"card{}\" data-state=\"all\" href=\"{}\">all<b>{}</b></a>",
        if query.state.is_none() { " on" } else { "" },
        attr(&link(&all)),
        summary.total
    );
    for (state, count) in &summary.by_state {
        let filtered = TableQuery {
            state: Some(*state),
            page: 1,
            ..query.clone()
        };
        let _ = write!(
            html,
            "<a class=\"card {name}{on}\" data-state=\"{name}\" href=\"{href}\">{name}<b>{count}</b></a>",
            name = state.as_str(),
            on = if query.state == Some(*state) {
                " on"
            } else {
                ""
            },
            href = attr(&link(&filtered)),
        );
    }
    html.push_str(
        "</div><h2>Reconnects by reason</h2><table id=\"reasons\"><thead><tr><th>reason</th>\
                   <th>reconnects</th><th>targets</th></tr></thead><tbody>",
    );
    for ((reason, count), (_, targets)) in summary
        .reconnects_by_reason
        .iter()
        .zip(&summary.targets_by_reason)
    {
        let _ = write!(
            html,
            "<tr><td>{reason}</td><td class=\"n\">{count}</td><td class=\"n\">{targets}</td></tr>"
        );
    }
    html.push_str("</tbody></table>");
}

fn fleet_section(html: &mut String, fleet: &FleetView) {
    let _ = write!(
        html,
        "<h2>Fleet <span class=\"muted\">{}</span></h2><p>group state {}, {} partitions</p>\
         <table id=\"fleet\"><thead><tr><th>worker</th><th>member id</th><th>host</th><th>partitions</th>\
         <th>targets</th></tr></thead><tbody>",
        encode_text(&fleet.group),
        encode_text(&fleet.state),
        fleet.partitions
    );
    for member in &fleet.members {
        let partitions: Vec<String> = member.partitions.iter().map(i32::to_string).collect();
        let _ = write!(
            html,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            encode_text(&member.client_id),
            if member.this_worker {
                " (this worker)"
            } else {
                ""
            },
            encode_text(&member.member_id),
            encode_text(&member.host),
            partitions.join(", "),
            member.targets,
        );
    }
    html.push_str("</tbody></table>");
    if let Some(error) = &fleet.error {
        let _ = write!(
            html,
            "<p class=\"muted\">group description: {}</p>",
            encode_text(error)
        );
    }
    if fleet.unowned_targets > 0 {
        let _ = write!(
            html,
            "<p class=\"stopped\" id=\"unowned\">{} targets in partitions no member owns</p>",
            fleet.unowned_targets
        );
    }
}

fn targets(html: &mut String, page: &Page<'_>) {
    let (table, query) = (page.table, page.query);
    let _ = write!(
        html,
        "<h2>Targets</h2><form method=\"get\" action=\"/status.html\">\
         <input type=\"search\" name=\"q\" placeholder=\"id contains\" value=\"{}\">",
        attr(query.q.as_deref().unwrap_or(""))
    );
    if let Some(state) = query.state {
        let _ = write!(
            html,
            "<input type=\"hidden\" name=\"state\" value=\"{}\">",
            state.as_str()
        );
    }
    let _ = write!(
        html,
        "<input type=\"hidden\" name=\"sort\" value=\"{}\"><input type=\"hidden\" name=\"order\" value=\"{}\">\
         <button>filter</button></form><p id=\"matched\">{} of {} targets{}</p>",
        query.sort.as_str(),
        if query.descending { "desc" } else { "asc" },
        table.matched,
        table.summary.total,
        query
            .state
            .map(|s| format!(" in state {}", s.as_str()))
            .unwrap_or_default(),
    );
    html.push_str("<table id=\"targets\"><thead><tr>");
    let header = |html: &mut String, label: &str, key: Option<SortKey>| match key {
        Some(key) => {
            let descending = query.sort == key && !query.descending;
            let next = TableQuery {
                sort: key,
                descending,
                page: 1,
                ..query.clone()
            };
            let mark = match (query.sort == key, query.descending) {
                (true, false) => " ▲",
                (true, true) => " ▼",
                _ => "",
            };
            let _ = write!(
                html,
                "<th><a data-sort=\"{}\" href=\"{}\">{label}{mark}</a></th>",
                key.as_str(),
                attr(&link(&next))
            );
        }
        None => {
            let _ = write!(html, "<th>{label}</th>");
        }
    };
    header(html, "target", Some(SortKey::Id));
    header(html, "state", Some(SortKey::State));
    header(html, "uptime", None);
    header(html, "events", Some(SortKey::Events));
    header(html, "acked", None);
    header(html, "in flight", None);
    header(html, "last event", Some(SortKey::LastEvent));
    header(html, "reconnects", Some(SortKey::Reconnects));
    header(html, "owner", None);
    header(html, "proxy", None);
    header(html, "last event id", None);
    header(html, "kafka", None);
    header(html, "last error", None);
    html.push_str("</tr></thead><tbody>");
    for row in &table.targets {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{state}\">{state}</td><td class=\"n\">{:.0}s</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            encode_text(&row.target),
            row.state_seconds,
            row.events,
            row.acked,
            row.in_flight,
            row.seconds_since_last_event
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.0}s ago")),
            row.reconnects,
            encode_text(row.owner.as_deref().unwrap_or("")),
            encode_text(row.proxy.as_deref().unwrap_or("direct")),
            encode_text(&row.last_event_id),
            row.delivery.as_str(),
            encode_text(row.last_error.as_deref().unwrap_or("")),
            state = row.state.as_str(),
        );
    }
    html.push_str("</tbody></table><p class=\"pager\" id=\"pager\">");
    if query.page > 1 {
        let previous = TableQuery {
            page: query.page - 1,
            ..query.clone()
        };
        let _ = write!(
            html,
            "<a rel=\"prev\" href=\"{}\">← previous</a>",
            attr(&link(&previous))
        );
    }
    let _ = write!(html, "<span>page {} of {}</span>", query.page, table.pages);
    if query.page < table.pages {
        let next = TableQuery {
            page: query.page + 1,
            ..query.clone()
        };
        let _ = write!(
            html,
            "<a rel=\"next\" href=\"{}\">next →</a>",
            attr(&link(&next))
        );
    }
    html.push_str("</p>");
}

/// The console's link for `query`.
fn link(query: &TableQuery) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    if let Some(state) = query.state {
        form.append_pair("state", state.as_str());
    }
    if let Some(q) = &query.q {
        form.append_pair("q", q);
    }
    if query.sort != SortKey::Id {
        form.append_pair("sort", query.sort.as_str());
    }
    if query.descending {
        form.append_pair("order", "desc");
    }
    if query.page > 1 {
        form.append_pair("page", &query.page.to_string());
    }
    if let Some(per_page) = query.per_page.filter(|n| *n != PER_PAGE) {
        form.append_pair("per_page", &per_page.to_string());
    }
    format!("/status.html?{}", form.finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::status::TargetStatus;
    use crate::status::query::table;

    #[test]
    fn hostile_status_text_is_escaped_on_the_console() {
        let status = TargetStatus::new(
            "t-1".parse().unwrap(),
            "http://127.0.0.1/x".to_owned(),
            "events".to_owned(),
            tokio::time::Instant::now(),
        );
        status.set_last_event_id("<img src=x onerror=alert(1)>");
        status.set_error(Some(
            "upstream said <script>alert('x')</script> & left".to_owned(),
        ));
        let query = TableQuery {
            q: Some("\"><script>".to_owned()),
            ..TableQuery::default()
        };
        let rows = vec![Arc::new(status)];
        let table = table(&rows, &TableQuery::default());
        let html = render(&Page {
            ready: true,
            table: &table,
            query: &query,
            history: &[],
            fleet: None,
            definition_problems: &["x (f.yaml): url: <img src=x onerror=alert(1)>".to_owned()],
        });
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(
            html.contains("upstream said &lt;script&gt;alert('x')&lt;/script&gt; &amp; left"),
            "{html}"
        );
    }
}
