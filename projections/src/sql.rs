//! Portable SQL for the read models: one code path over SQLite (the embedded mode) and
//! PostgreSQL (the distributed mode), through sqlx's `Any` driver.
//!
//! Placeholders are written `$1`, `$2`, ... (both engines read them). Where the two dialects
//! differ, [`Dialect`] says how; everything else is the common subset (`ON CONFLICT`, `TRUE`,
//! `BIGINT`, row values, `EXISTS`).

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Encode, Type};
use sqlx::{AnyConnection, AnyPool};

/// Which engine a read-model database runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn of_pool(pool: &AnyPool) -> Dialect {
        Dialect::of_scheme(pool.connect_options().database_url.scheme())
    }

    pub fn of_conn(conn: &AnyConnection) -> Dialect {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }

    fn of_scheme(scheme: &str) -> Dialect {
        if scheme.starts_with("postgres") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }

    /// `LIKE` as DICOM wildcard matching means it: SQLite's `LIKE` ignores ASCII case, so
    /// PostgreSQL's equivalent is `ILIKE`.
    pub fn like(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }

    /// The function giving the 1-based position of its second argument in its first (0 when
    /// absent).
    pub fn position(self) -> &'static str {
        match self {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        }
    }

    /// An aggregate joining `expr` with `separator` (a SQL string literal).
    pub fn string_agg(self, expr: &str, separator: &str) -> String {
        let name = match self {
            Dialect::Sqlite => "group_concat",
            Dialect::Postgres => "string_agg",
        };
        format!("{name}({expr}, {separator})")
    }

    /// An aggregate giving one TEXT value: a JSON array with one object per row, `columns` as
    /// its keys, in `order`. sqlx hands a SQLite row from its worker thread to the runtime one
    /// at a time and the `Any` driver converts every value: reading a page of 100 studies row by
    /// row took 4.9 ms at the median, of which SQLite itself spends a fraction of a millisecond.
    /// PostgreSQL's `json_agg` is NULL over no rows.
    pub fn json_rows(self, columns: &[&str], order: &str) -> String {
        let pairs: Vec<String> = columns.iter().map(|c| format!("'{c}', {c}")).collect();
        let pairs = pairs.join(", ");
        match self {
            Dialect::Sqlite => format!("json_group_array(json_object({pairs}) ORDER BY {order})"),
            Dialect::Postgres => {
                format!("CAST(json_agg(json_build_object({pairs}) ORDER BY {order}) AS TEXT)")
            }
        }
    }

    /// An aggregate giving one TEXT value: a JSON array with one array per row holding
    /// `columns`, in `order` (a whole `ORDER BY` clause, or empty for the order the rows are
    /// read in). PostgreSQL's `json_agg` is NULL over no rows.
    pub fn json_array_rows(self, columns: &[&str], order: &str) -> String {
        let columns = columns.join(", ");
        match self {
            Dialect::Sqlite => format!("json_group_array(json_array({columns}){order})"),
            Dialect::Postgres => {
                format!("CAST(json_agg(json_build_array({columns}){order}) AS TEXT)")
            }
        }
    }

    /// The table option that stores a table's rows in its primary key's B-tree (SQLite; a
    /// small table read by key range then needs no second lookup per row).
    pub fn without_rowid(self) -> &'static str {
        match self {
            Dialect::Sqlite => " WITHOUT ROWID",
            Dialect::Postgres => "",
        }
    }

    /// How an `INSERT` of many rows begins and ends so that a row whose key is already there is
    /// skipped: SQLite's `INSERT OR IGNORE`, PostgreSQL's `ON CONFLICT DO NOTHING`. SQLite's
    /// `ON CONFLICT DO NOTHING` only covers the key: its NOT NULL checks may still abort the
    /// statement halfway, so SQLite copies every page the statement changes into a statement
    /// journal first (a temporary file past 64 KiB). The audit trail's 64-row inserts spent
    /// most of their time there. `OR IGNORE` can never abort, so SQLite keeps no statement journal,
    /// but it also skips a row that breaks a NOT NULL constraint: callers bind a value to every
    /// NOT NULL column.
    pub fn insert_ignoring(self, table: &str) -> (String, &'static str) {
        match self {
            Dialect::Sqlite => (format!("INSERT OR IGNORE INTO {table} "), ""),
            Dialect::Postgres => (format!("INSERT INTO {table} "), " ON CONFLICT DO NOTHING"),
        }
    }

    /// A query counting the columns named `$2` of the table named `$1` in the current schema:
    /// 1 if it has one, 0 if not (or if there is no such table).
    pub fn column_count(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2",
            Dialect::Postgres => {
                "SELECT COUNT(*) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
            }
        }
    }

    /// The larger of two values (SQLite's two-argument `max`).
    pub fn greatest(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite => format!("MAX({a}, {b})"),
            Dialect::Postgres => format!("GREATEST({a}, {b})"),
        }
    }

    /// Whether `ORDER BY x DESC` puts rows where `x` is NULL first (PostgreSQL) rather than
    /// last (SQLite).
    pub fn nulls_first_descending(self) -> bool {
        self == Dialect::Postgres
    }

    /// A column the SQLite planner must not answer from an index (unary `+`); PostgreSQL's
    /// planner costs its plans from statistics and needs no such hint.
    pub fn not_indexed(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres => column.to_owned(),
        }
    }
}

/// A statement built piece by piece with its binds: numbered `$n` as they are pushed on
/// PostgreSQL, anonymous `?` on SQLite. SQLite keeps named placeholders (`$n`, `?n`) in a list
/// it walks from the start for each one, when the statement is parsed and again when sqlx binds
/// it (`sqlite3_bind_parameter_name` per placeholder), so a statement of n named binds costs
/// n² steps: the audit trail's 64 rows of 13 columns spent 12 % of a QIDO-RS run's CPU there.
/// Anonymous ones are not listed, and sqlx binds them in order.
pub struct Sql {
    dialect: Dialect,
    text: String,
    args: AnyArguments<'static>,
    binds: usize,
    error: Option<sqlx::error::BoxDynError>,
}

impl Sql {
    pub fn new(dialect: Dialect, text: &str) -> Sql {
        Sql {
            dialect,
            text: text.to_owned(),
            args: AnyArguments::default(),
            binds: 0,
            error: None,
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Pushes the next placeholder and binds `value` to it.
    pub fn bind<T>(&mut self, value: T) -> &mut Sql
    where
        T: 'static + Encode<'static, Any> + Type<Any>,
    {
        self.binds += 1;
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.binds.to_string());
            }
        }
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Pushes `$a, $b, ...` (`?, ?, ...` on SQLite), one bind per value.
    pub fn bind_list<T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Sql
    where
        T: 'static + Encode<'static, Any> + Type<Any>,
    {
        for (n, value) in values.into_iter().enumerate() {
            if n > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Runs the statement on `conn` (inside a projection's transaction) and returns the rows it
    /// changed.
    pub async fn execute(self, conn: &mut AnyConnection) -> Result<u64, sqlx::Error> {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Encode(e));
        }
        let Sql { text, args, .. } = self;
        let done = sqlx::query_with(&text, args).execute(conn).await?;
        Ok(done.rows_affected())
    }

    /// Runs a statement whose one row holds one [`Dialect::json_rows`] value and returns the
    /// rows it holds (none for a NULL or an absent row).
    pub async fn fetch_json_rows<R>(self, pool: &AnyPool) -> Result<Vec<R>, sqlx::Error>
    where
        R: serde::de::DeserializeOwned,
    {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Encode(e));
        }
        let Sql { text, args, .. } = self;
        let json: Option<Option<String>> = sqlx::query_scalar_with(&text, args)
            .fetch_optional(pool)
            .await?;
        match json.flatten() {
            None => Ok(Vec::new()),
            Some(json) => serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(e.into())),
        }
    }

    /// Runs the statement and returns its rows.
    pub async fn fetch_all<R>(self, pool: &AnyPool) -> Result<Vec<R>, sqlx::Error>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Encode(e));
        }
        let Sql { text, args, .. } = self;
        sqlx::query_as_with(&text, args).fetch_all(pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    #[test]
    fn binds_are_numbered_in_order() {
        let mut sql = Sql::new(Dialect::Postgres, "SELECT 1 WHERE a = ");
        sql.bind(1i64)
            .push(" AND b IN (")
            .bind_list(["x", "y"])
            .push(")");
        assert_eq!(sql.text(), "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(sql.args.len(), 3);
    }

    #[test]
    fn sqlite_binds_are_anonymous() {
        let mut sql = Sql::new(Dialect::Sqlite, "SELECT 1 WHERE a = ");
        sql.bind(1i64)
            .push(" AND b IN (")
            .bind_list(["x", "y"])
            .push(")");
        assert_eq!(sql.text(), "SELECT 1 WHERE a = ? AND b IN (?, ?)");
        assert_eq!(sql.args.len(), 3);
    }

    /// Thousands of anonymous binds in one statement reach SQLite in the order they were
    /// pushed, each to its own placeholder.
    #[tokio::test]
    async fn sqlite_stores_many_anonymous_binds_in_order() -> Result<(), sqlx::Error> {
        crate::db::install_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:").await?;
        sqlx::query("CREATE TABLE t (n INTEGER, label TEXT)")
            .execute(&mut conn)
            .await?;
        let mut insert = Sql::new(Dialect::Sqlite, "INSERT INTO t VALUES ");
        for n in 0..2_000i64 {
            insert
                .push(if n == 0 { "(" } else { ", (" })
                .bind(n * 7)
                .push(", ")
                .bind(format!("row {n}"))
                .push(")");
        }
        assert_eq!(insert.execute(&mut conn).await?, 2_000);
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT n, label FROM t ORDER BY rowid")
            .fetch_all(&mut conn)
            .await?;
        let expected: Vec<(i64, String)> =
            (0..2_000i64).map(|n| (n * 7, format!("row {n}"))).collect();
        assert_eq!(rows, expected);
        Ok(())
    }

    #[test]
    fn dialects_differ_where_the_engines_do() {
        assert_eq!(Dialect::Sqlite.position(), "instr");
        assert_eq!(Dialect::Postgres.position(), "strpos");
        assert_eq!(Dialect::Postgres.not_indexed("s.x"), "s.x");
        assert_eq!(Dialect::Sqlite.not_indexed("s.x"), "+s.x");
        assert_eq!(Dialect::Postgres.like(), "ILIKE");
        assert_eq!(Dialect::of_scheme("postgresql"), Dialect::Postgres);
        assert_eq!(Dialect::of_scheme("sqlite"), Dialect::Sqlite);
    }
}
