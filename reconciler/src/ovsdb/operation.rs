//! Typed `transact` operations (RFC 7047 section 5.2) and their per-operation results

use serde_json::{Map, Value as Json, json};

use super::error::Error;
use super::row::Row;
use super::value::{Uuid, Value, decode};

/// Condition functions for `where` clauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One `[column, function, value]` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Value,
}

impl Condition {
    pub fn new(column: &str, function: Function, value: impl Into<Value>) -> Condition {
        Condition {
            column: column.to_owned(),
            function,
            value: value.into(),
        }
    }

    pub fn eq(column: &str, value: impl Into<Value>) -> Condition {
        Condition::new(column, Function::Eq, value)
    }

    pub fn ne(column: &str, value: impl Into<Value>) -> Condition {
        Condition::new(column, Function::Ne, value)
    }

    pub fn includes(column: &str, value: impl Into<Value>) -> Condition {
        Condition::new(column, Function::Includes, value)
    }

    /// `_uuid == U`: the usual way to address one row.
    pub fn uuid(uuid: &Uuid) -> Condition {
        Condition::eq("_uuid", Value::uuid(uuid.clone()))
    }

    pub(crate) fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// Mutators for `mutate`: arithmetic on integer/real columns, insert/delete on sets and maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: &str, mutator: Mutator, value: impl Into<Value>) -> Mutation {
        Mutation {
            column: column.to_owned(),
            mutator,
            value: value.into(),
        }
    }

    /// Adds elements to a set or pairs to a map (existing keys keep their value).
    pub fn insert(column: &str, value: impl Into<Value>) -> Mutation {
        Mutation::new(column, Mutator::Insert, value)
    }

    /// Removes elements from a set; from a map, removes the given keys (a set) or pairs (a map).
    pub fn delete(column: &str, value: impl Into<Value>) -> Mutation {
        Mutation::new(column, Mutator::Delete, value)
    }

    pub fn add(column: &str, value: i64) -> Mutation {
        Mutation::new(column, Mutator::Add, value)
    }

    fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// How a `wait` compares the selected rows with the expected ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `uuid_name` lets later operations refer to the new row as `["named-uuid", name]`
    /// (must match `[a-zA-Z_][a-zA-Z0-9_]*`).
    Insert {
        table: String,
        row: Row,
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    /// With `timeout_ms: Some(0)` (the default of [`Operation::wait`]) this is a
    /// compare-and-swap guard: the transaction fails at once if the rows differ.
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Commit {
        durable: bool,
    },
    /// Makes the transaction fail with "aborted" after everything before it ran: a dry run.
    Abort,
    /// Goes to the database log with the transaction.
    Comment(String),
    /// Fails unless this session owns the named lock.
    Assert {
        lock: String,
    },
}

impl Operation {
    pub fn insert(table: &str, row: Row) -> Operation {
        Operation::Insert {
            table: table.to_owned(),
            row,
            uuid_name: None,
        }
    }

    pub fn insert_named(table: &str, row: Row, uuid_name: &str) -> Operation {
        Operation::Insert {
            table: table.to_owned(),
            row,
            uuid_name: Some(uuid_name.to_owned()),
        }
    }

    pub fn select(table: &str, conditions: Vec<Condition>) -> Operation {
        Operation::Select {
            table: table.to_owned(),
            conditions,
            columns: None,
        }
    }

    pub fn select_columns(table: &str, conditions: Vec<Condition>, columns: &[&str]) -> Operation {
        let columns = Some(columns.iter().map(|c| (*c).to_owned()).collect());
        Operation::Select {
            table: table.to_owned(),
            conditions,
            columns,
        }
    }

    pub fn update(table: &str, conditions: Vec<Condition>, row: Row) -> Operation {
        Operation::Update {
            table: table.to_owned(),
            conditions,
            row,
        }
    }

    pub fn mutate(table: &str, conditions: Vec<Condition>, mutations: Vec<Mutation>) -> Operation {
        Operation::Mutate {
            table: table.to_owned(),
            conditions,
            mutations,
        }
    }

    pub fn delete(table: &str, conditions: Vec<Condition>) -> Operation {
        Operation::Delete {
            table: table.to_owned(),
            conditions,
        }
    }

    /// A guard with timeout 0: the rows matching `conditions`, projected on `columns`,
    /// must (not) equal `rows` right now.
    pub fn wait(
        table: &str,
        conditions: Vec<Condition>,
        columns: &[&str],
        until: WaitUntil,
        rows: Vec<Row>,
    ) -> Operation {
        Operation::Wait {
            table: table.to_owned(),
            conditions,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            until,
            rows,
            timeout_ms: Some(0),
        }
    }

    pub fn comment(text: &str) -> Operation {
        Operation::Comment(text.to_owned())
    }

    /// The RFC name of the operation, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Commit { .. } => "commit",
            Operation::Abort => "abort",
            Operation::Comment(_) => "comment",
            Operation::Assert { .. } => "assert",
        }
    }

    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        o.insert("op".into(), json!(self.name()));
        let conds = |c: &[Condition]| Json::Array(c.iter().map(Condition::to_json).collect());
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("row".into(), row.to_json());
                if let Some(name) = uuid_name {
                    o.insert("uuid-name".into(), json!(name));
                }
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                if let Some(columns) = columns {
                    o.insert("columns".into(), json!(columns));
                }
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                o.insert("row".into(), row.to_json());
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                o.insert(
                    "mutations".into(),
                    Json::Array(mutations.iter().map(Mutation::to_json).collect()),
                );
            }
            Operation::Delete { table, conditions } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                o.insert("columns".into(), json!(columns));
                let until = match until {
                    WaitUntil::Equal => "==",
                    WaitUntil::NotEqual => "!=",
                };
                o.insert("until".into(), json!(until));
                o.insert(
                    "rows".into(),
                    Json::Array(rows.iter().map(Row::to_json).collect()),
                );
                if let Some(t) = timeout_ms {
                    o.insert("timeout".into(), json!(t));
                }
            }
            Operation::Commit { durable } => {
                o.insert("durable".into(), json!(durable));
            }
            Operation::Abort => {}
            Operation::Comment(text) => {
                o.insert("comment".into(), json!(text));
            }
            Operation::Assert { lock } => {
                o.insert("lock".into(), json!(lock));
            }
        }
        Json::Object(o)
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    Insert {
        uuid: Uuid,
    },
    Select {
        rows: Vec<Row>,
    },
    /// Rows matched by update, mutate or delete.
    Count {
        count: u64,
    },
    /// wait, commit, comment, assert.
    Empty,
}

impl OpResult {
    pub fn uuid(&self) -> Option<&Uuid> {
        match self {
            OpResult::Insert { uuid } => Some(uuid),
            _ => None,
        }
    }

    pub fn rows(&self) -> &[Row] {
        match self {
            OpResult::Select { rows } => rows,
            _ => &[],
        }
    }

    pub fn count(&self) -> Option<u64> {
        match self {
            OpResult::Count { count } => Some(*count),
            _ => None,
        }
    }
}

/// `{"error": ..., "details": ...}` from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub error: String,
    pub details: Option<String>,
}

/// What happened to one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum OpOutcome {
    Done(OpResult),
    Failed(OpError),
    /// An earlier operation failed, so this one did not run.
    NotRun,
}

/// The whole `transact` answer: one outcome per operation, plus the commit-time error
/// the server appends as an extra element when checks at commit fail.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactReply {
    pub outcomes: Vec<OpOutcome>,
    pub commit_error: Option<OpError>,
}

impl TransactReply {
    pub fn from_json(json: &Json, n_ops: usize) -> Result<TransactReply, Error> {
        let items = json
            .as_array()
            .ok_or_else(|| decode("transact result", json))?;
        let mut outcomes = Vec::with_capacity(n_ops);
        let mut commit_error = None;
        for (i, item) in items.iter().enumerate() {
            if i >= n_ops {
                // Only an error can follow the per-operation results.
                if !item.is_null() {
                    commit_error =
                        Some(op_error(item).ok_or_else(|| decode("commit error", item))?);
                }
                continue;
            }
            outcomes.push(outcome(item)?);
        }
        // Older servers stop at the failing operation instead of padding with nulls.
        outcomes.resize(n_ops, OpOutcome::NotRun);
        Ok(TransactReply {
            outcomes,
            commit_error,
        })
    }

    /// Successful results, or the first failure as a classified [`Error`].
    pub fn into_result(self, ops: &[Operation]) -> Result<Vec<OpResult>, Error> {
        let mut results = Vec::with_capacity(self.outcomes.len());
        for (index, outcome) in self.outcomes.into_iter().enumerate() {
            match outcome {
                OpOutcome::Done(r) => results.push(r),
                OpOutcome::Failed(OpError { error, details }) => {
                    let op = ops.get(index).map(Operation::name).unwrap_or("?");
                    return Err(if op == "wait" && error == "timed out" {
                        Error::GuardFailed { index, details }
                    } else {
                        Error::OpFailed {
                            index,
                            op: op.to_owned(),
                            error,
                            details,
                        }
                    });
                }
                OpOutcome::NotRun => {
                    // The failure is then the commit error, or the reply was cut short.
                    break;
                }
            }
        }
        if let Some(OpError { error, details }) = self.commit_error {
            return Err(Error::CommitFailed { error, details });
        }
        if results.len() != ops.len() {
            return Err(Error::Decode {
                what: "transact result".into(),
                reason: "fewer results than operations".into(),
            });
        }
        Ok(results)
    }
}

fn op_error(item: &Json) -> Option<OpError> {
    let error = item.get("error")?.as_str()?.to_owned();
    let details = item
        .get("details")
        .and_then(Json::as_str)
        .map(str::to_owned);
    Some(OpError { error, details })
}

fn outcome(item: &Json) -> Result<OpOutcome, Error> {
    if item.is_null() {
        return Ok(OpOutcome::NotRun);
    }
    if item.get("error").is_some_and(|e| !e.is_null()) {
        return op_error(item)
            .map(OpOutcome::Failed)
            .ok_or_else(|| decode("operation error", item));
    }
    let result = if let Some(uuid) = item.get("uuid") {
        let uuid = Value::from_json(uuid)?
            .as_uuid()
            .cloned()
            .ok_or_else(|| decode("inserted uuid", item))?;
        OpResult::Insert { uuid }
    } else if let Some(rows) = item.get("rows") {
        let rows = rows.as_array().ok_or_else(|| decode("rows", item))?;
        OpResult::Select {
            rows: rows.iter().map(Row::from_json).collect::<Result<_, _>>()?,
        }
    } else if let Some(count) = item.get("count") {
        OpResult::Count {
            count: count.as_u64().ok_or_else(|| decode("count", item))?,
        }
    } else {
        OpResult::Empty
    };
    Ok(OpOutcome::Done(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_rfc_shapes() {
        let op =
            Operation::insert_named("Logical_Switch_Port", Row::new().with("name", "p1"), "p1");
        assert_eq!(
            op.to_json(),
            json!({"op": "insert", "table": "Logical_Switch_Port", "row": {"name": "p1"}, "uuid-name": "p1"})
        );
        let op = Operation::mutate(
            "Logical_Switch",
            vec![Condition::eq("name", "sw0")],
            vec![Mutation::insert("ports", Value::named_uuid("p1"))],
        );
        assert_eq!(
            op.to_json(),
            json!({"op": "mutate", "table": "Logical_Switch", "where": [["name", "==", "sw0"]],
                   "mutations": [["ports", "insert", ["named-uuid", "p1"]]]})
        );
        let op = Operation::wait(
            "Logical_Switch",
            vec![],
            &["name"],
            WaitUntil::NotEqual,
            vec![Row::new().with("name", "sw0")],
        );
        assert_eq!(
            op.to_json(),
            json!({"op": "wait", "table": "Logical_Switch", "where": [], "columns": ["name"],
                   "until": "!=", "rows": [{"name": "sw0"}], "timeout": 0})
        );
        assert_eq!(Operation::Abort.to_json(), json!({"op": "abort"}));
        assert_eq!(
            Operation::comment("hi").to_json(),
            json!({"op": "comment", "comment": "hi"})
        );
    }

    #[test]
    fn parses_results_and_trailing_commit_error() {
        let ops = [
            Operation::insert("T", Row::new()),
            Operation::select("T", vec![]),
        ];
        let json = json!([{"uuid": ["uuid", "00000001-0000-4000-8000-000000000000"]}, {"rows": [{"name": "a"}]},
                          {"error": "referential integrity violation", "details": "dangling"}]);
        let reply = TransactReply::from_json(&json, 2).unwrap();
        assert!(matches!(
            reply.outcomes[0],
            OpOutcome::Done(OpResult::Insert { .. })
        ));
        assert_eq!(
            reply.outcomes[1],
            OpOutcome::Done(OpResult::Select {
                rows: vec![Row::new().with("name", "a")]
            })
        );
        assert_eq!(
            reply.commit_error.as_ref().unwrap().error,
            "referential integrity violation"
        );
        let err = reply.into_result(&ops).unwrap_err();
        assert!(matches!(err, Error::CommitFailed { .. }), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn failed_wait_is_a_guard_failure() {
        let ops = [
            Operation::wait("T", vec![], &["name"], WaitUntil::Equal, vec![]),
            Operation::delete("T", vec![]),
        ];
        let json = json!([{"error": "timed out", "details": null}, null]);
        let reply = TransactReply::from_json(&json, 2).unwrap();
        assert_eq!(reply.outcomes[1], OpOutcome::NotRun);
        let err = reply.into_result(&ops).unwrap_err();
        assert!(matches!(err, Error::GuardFailed { index: 0, .. }), "{err}");
        assert!(err.is_retryable());
    }
}
