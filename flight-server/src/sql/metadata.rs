//! The metadata a Flight SQL driver asks for before its first query: server
//! capabilities (`GetSqlInfo`), type information (`GetXdbcTypeInfo`), and the empty but
//! correctly typed key listings (there are no keys across shared assets).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar, XdbcDataType,
};

use super::session::QueryLimits;
use crate::error::{FlightError, Result};

const KEYWORDS: &[&str] = &[
    "ANALYZE",
    "ARRAY",
    "ASC",
    "CASE",
    "CAST",
    "CROSS",
    "CUBE",
    "DESC",
    "DISTINCT",
    "EXCEPT",
    "EXPLAIN",
    "FILTER",
    "FIRST",
    "FULL",
    "GROUPING",
    "ILIKE",
    "INTERSECT",
    "INTERVAL",
    "LAST",
    "LATERAL",
    "LIMIT",
    "NULLS",
    "OFFSET",
    "OVER",
    "PARTITION",
    "QUALIFY",
    "RANGE",
    "RECURSIVE",
    "ROLLUP",
    "ROWS",
    "SEMI",
    "ANTI",
    "UNNEST",
    "WINDOW",
    "WITH",
];
const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "degrees", "exp", "floor", "ln",
    "log", "log10", "log2", "mod", "pi", "power", "radians", "random", "round", "signum", "sin",
    "sqrt", "tan", "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "position",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "translate",
    "trim",
    "upper",
];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_unixtime",
];
const SYSTEM_FUNCTIONS: &[&str] = &["arrow_typeof", "coalesce", "nullif", "nvl"];

/// What this server supports, built once. Values follow the Flight SQL specification
/// (`FlightSql.proto`); bit masks are sums of the enum values' powers of two.
pub(crate) fn sql_info(limits: &QueryLimits) -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "insitu");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        i32::try_from(limits.timeout.as_millis()).unwrap_or(i32::MAX),
    );
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsConvert, HashMap::<i32, Vec<i32>>::new());
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    // SqlSupportedGroupBy: unrelated (bit 0) and beyond-select (bit 1).
    b.append(SqlInfo::SqlSupportedGroupBy, 0b11i32);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    // ANSI92 entry (bit 0) and intermediate (bit 1) SQL; arrow-flight does not export
    // the `SupportedAnsi92SqlGrammarLevel` enum.
    b.append(SqlInfo::SqlAnsi92SupportedLevel, 0b11i32);
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    // Subqueries in comparisons, EXISTS, IN and quantified comparisons (bits 0-3).
    b.append(SqlInfo::SqlSupportedSubqueries, 0b1111i32);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    // UNION and UNION ALL (bits 0-1).
    b.append(SqlInfo::SqlSupportedUnions, 0b11i32);
    b.append(SqlInfo::SqlMaxBinaryLiteralLength, 0i64);
    b.append(SqlInfo::SqlMaxCharLiteralLength, 0i64);
    b.append(SqlInfo::SqlMaxColumnNameLength, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInGroupBy, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInIndex, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInOrderBy, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInSelect, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInTable, 0i64);
    b.append(SqlInfo::SqlMaxConnections, 0i64);
    b.append(SqlInfo::SqlMaxCursorNameLength, 0i64);
    b.append(SqlInfo::SqlMaxIndexLength, 0i64);
    b.append(SqlInfo::SqlDbSchemaNameLength, 0i64);
    b.append(SqlInfo::SqlMaxProcedureNameLength, 0i64);
    b.append(SqlInfo::SqlMaxCatalogNameLength, 0i64);
    b.append(SqlInfo::SqlMaxRowSize, 0i64);
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    b.append(
        SqlInfo::SqlMaxStatementLength,
        i64::try_from(limits.max_sql_bytes).unwrap_or(i64::MAX),
    );
    b.append(SqlInfo::SqlMaxStatements, 1i64);
    b.append(SqlInfo::SqlMaxTableNameLength, 63i64);
    b.append(SqlInfo::SqlMaxTablesInSelect, 0i64);
    b.append(SqlInfo::SqlMaxUsernameLength, 0i64);
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i64);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    // Forward-only result sets (bit 1 of SqlSupportedResultSetType).
    b.append(SqlInfo::SqlSupportedResultSetTypes, 0b10i32);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build()
        .map_err(|e| FlightError::Internal(format!("building SqlInfo: {e}")))
}

fn xdbc(name: &str, ty: XdbcDataType, size: Option<i32>, quoted: bool) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type: ty,
        column_size: size,
        literal_prefix: quoted.then(|| "'".to_string()),
        literal_suffix: quoted.then(|| "'".to_string()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quoted,
        searchable: if quoted {
            Searchable::Full
        } else {
            Searchable::Basic
        },
        unsigned_attribute: (!quoted).then_some(false),
        fixed_prec_scale: false,
        auto_increment: None,
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: ty,
        datetime_subcode: None,
        num_prec_radix: (!quoted && size.is_some()).then_some(10),
        interval_precision: None,
    }
}

static XDBC: LazyLock<std::result::Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(xdbc("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false));
    b.append(xdbc("TINYINT", XdbcDataType::XdbcTinyint, Some(3), false));
    b.append(xdbc("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), false));
    b.append(xdbc("INTEGER", XdbcDataType::XdbcInteger, Some(10), false));
    b.append(xdbc("BIGINT", XdbcDataType::XdbcBigint, Some(19), false));
    b.append(xdbc("REAL", XdbcDataType::XdbcReal, Some(7), false));
    b.append(xdbc("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false));
    b.append(xdbc("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false));
    b.append(xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None, true));
    b.append(xdbc("BINARY", XdbcDataType::XdbcBinary, None, true));
    b.append(xdbc("DATE", XdbcDataType::XdbcDate, Some(10), true));
    b.append(xdbc("TIME", XdbcDataType::XdbcTime, None, true));
    b.append(xdbc("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, true));
    b.build().map_err(|e| e.to_string())
});

pub(crate) fn xdbc_type_info() -> Result<&'static XdbcTypeInfoData> {
    XDBC.as_ref()
        .map_err(|e| FlightError::Internal(format!("building XdbcTypeInfo: {e}")))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// `GetPrimaryKeys`.
pub(crate) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("catalog_name", true),
        utf8("db_schema_name", true),
        utf8("table_name", false),
        utf8("column_name", false),
        utf8("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// `GetImportedKeys`, `GetExportedKeys` and `GetCrossReference` share one shape.
pub(crate) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("pk_catalog_name", true),
        utf8("pk_db_schema_name", true),
        utf8("pk_table_name", false),
        utf8("pk_column_name", false),
        utf8("fk_catalog_name", true),
        utf8("fk_db_schema_name", true),
        utf8("fk_table_name", false),
        utf8("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        utf8("fk_key_name", true),
        utf8("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

pub(crate) fn empty(schema: SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_info_is_dense_and_answers_filters() {
        let info = sql_info(&QueryLimits::default()).expect("build");
        let all = info.record_batch(Vec::<u32>::new()).expect("all");
        assert!(all.num_rows() >= 80, "only {} infos", all.num_rows());
        let one = info
            .record_batch([SqlInfo::FlightSqlServerReadOnly as u32])
            .expect("one");
        assert_eq!(one.num_rows(), 1);
    }

    #[test]
    fn type_info_builds() {
        let data = xdbc_type_info().expect("build");
        assert!(data.record_batch(None).expect("all").num_rows() >= 10);
    }
}
