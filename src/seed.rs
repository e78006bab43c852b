//! Sample tenants in the source layout, for `reversa demo`, the tests and the benchmarks.
//!
//! The data looks like a town council's: citizens, case files with amounts and dates, a register
//! of correspondence, and tags; NULLs, unicode, REAL extremes, BLOBs, an empty table, a table
//! without a primary key, a WITHOUT ROWID table, and full-text (FTS5) tables, one holding its own
//! text and one indexing another table. Files have varied sizes, unicode names and deep
//! paths, some compressible (text) and most not (scans, photos). Everything is deterministic for a
//! given seed, so two runs produce the same bytes.

use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rusqlite::params;

/// How big a sample tenant is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Rows in the main case table; the other tables scale with it.
    pub rows: usize,
    /// Total bytes of attachments and documents, approximately.
    pub file_bytes: u64,
    /// Fraction of file bytes that are incompressible.
    pub incompressible: f64,
}

impl Scale {
    /// A few MB: quick to back up, enough to show dedup and every edge case.
    pub const DEMO: Scale = Scale { rows: 2_000, file_bytes: 6 << 20, incompressible: 0.7 };
}

const FIRST: &[&str] =
    &["Giulia", "Marco", "Anna", "Luca", "Chiara", "Giovanni", "Sofia", "Niccolò", "Zoë", "José", "Åsa", "Łukasz"];
const LAST: &[&str] =
    &["Rossi", "Bianchi", "Esposito", "Colombo", "D'Angelo", "Müller", "Ferrari", "Gallo", "Conti", "Dvořák"];
const KINDS: &[&str] = &[
    "carta d'identità",
    "residenza",
    "TARI",
    "permesso di costruire",
    "accesso agli atti",
    "SUAP",
    "mensa scolastica",
];
const STATES: &[&str] = &["aperta", "in istruttoria", "sospesa", "chiusa", "archiviata"];
const WORDS: &[&str] = &[
    "il",
    "comune",
    "di",
    "richiesta",
    "del",
    "cittadino",
    "protocollo",
    "ufficio",
    "tributi",
    "anagrafe",
    "determina",
    "dirigenziale",
    "pagamento",
    "scadenza",
    "allegato",
    "verbale",
    "seduta",
    "giunta",
    "è",
    "città",
];

fn words(rng: &mut StdRng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

/// Create `<root>/<tenant>/` with a database and files.
pub fn seed_tenant(root: &Path, tenant: &str, scale: Scale, seed: u64) -> std::io::Result<()> {
    let dir = root.join(tenant);
    std::fs::create_dir_all(&dir)?;
    let mut rng = StdRng::seed_from_u64(seed);
    seed_database(&dir.join(crate::source::DATABASE_FILE), scale, &mut rng).map_err(std::io::Error::other)?;
    seed_files(&dir, scale, &mut rng)
}

fn seed_database(path: &Path, scale: Scale, rng: &mut StdRng) -> rusqlite::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut db = rusqlite::Connection::open(path)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA user_version = 7;
         CREATE TABLE cittadini (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             codice_fiscale TEXT UNIQUE NOT NULL,
             nome TEXT NOT NULL, cognome TEXT NOT NULL,
             nato_il TEXT, email TEXT, note TEXT,
             creato_il TEXT NOT NULL DEFAULT (datetime('now')));
         CREATE TABLE pratiche (
             id INTEGER PRIMARY KEY,
             cittadino_id INTEGER REFERENCES cittadini(id),
             tipo TEXT NOT NULL, stato TEXT NOT NULL,
             aperta_il TEXT NOT NULL, chiusa_il TEXT,
             importo REAL, urgente INTEGER NOT NULL DEFAULT 0,
             descrizione TEXT, firma BLOB);
         CREATE INDEX pratiche_stato ON pratiche(stato, aperta_il);
         CREATE TABLE protocollo (anno INTEGER, numero INTEGER, oggetto TEXT, mittente TEXT,
             PRIMARY KEY (anno, numero)) WITHOUT ROWID;
         CREATE TABLE log_eventi (quando TEXT, chi TEXT, cosa TEXT);
         CREATE TABLE sospesi (id INTEGER PRIMARY KEY, motivo TEXT);
         CREATE TABLE valori_limite (etichetta TEXT, valore REAL, intero INTEGER);
         CREATE VIRTUAL TABLE ricerca_atti USING fts5(titolo, testo);
         CREATE VIRTUAL TABLE cittadini_fts USING fts5(nome, cognome, content='cittadini', content_rowid='id');
         CREATE VIEW pratiche_aperte AS SELECT * FROM pratiche WHERE stato <> 'chiusa';
         CREATE TRIGGER pratiche_chiusura AFTER UPDATE OF stato ON pratiche WHEN NEW.stato = 'chiusa'
             BEGIN UPDATE pratiche SET chiusa_il = datetime('now') WHERE id = NEW.id; END;",
    )?;
    let tx = db.transaction()?;
    let citizens = (scale.rows / 4).max(10);
    {
        let mut st = tx.prepare("INSERT INTO cittadini (codice_fiscale, nome, cognome, nato_il, email, note, creato_il) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for i in 0..citizens {
            let nome = FIRST[rng.random_range(0..FIRST.len())];
            let cognome = LAST[rng.random_range(0..LAST.len())];
            let cf = format!(
                "{}{}{:02}A{:02}H501{:X}",
                &cognome.to_uppercase()[..3.min(cognome.len())],
                &nome.to_uppercase()[..2],
                i % 100,
                i % 28 + 1,
                i
            );
            let nato = (rng.random_bool(0.9)).then(|| format!("{}-{:02}-{:02}", 1930 + i % 80, i % 12 + 1, i % 28 + 1));
            let email = (rng.random_bool(0.7))
                .then(|| format!("{}.{}{}@example.it", nome.to_lowercase(), cognome.to_lowercase(), i));
            let note = match i % 7 {
                0 => Some("=SOMMA(A1:A3) scritto dal cittadino".to_string()),
                1 => Some("riga uno\nriga due, con \"virgolette\"".to_string()),
                2 => Some(format!("{} 🏛️", words(rng, 12))),
                _ => None,
            };
            st.execute(params![
                cf,
                nome,
                cognome,
                nato,
                email,
                note,
                format!("2024-{:02}-{:02} 09:{:02}:00", i % 12 + 1, i % 28 + 1, i % 60)
            ])?;
        }
        let mut st = tx.prepare("INSERT INTO pratiche (id, cittadino_id, tipo, stato, aperta_il, chiusa_il, importo, urgente, descrizione, firma) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")?;
        let mut sig = vec![0u8; 2048];
        for i in 0..scale.rows {
            let stato = STATES[rng.random_range(0..STATES.len())];
            let aperta = format!("2025-{:02}-{:02}T{:02}:{:02}:00", i % 12 + 1, i % 28 + 1, i % 24, i % 60);
            let chiusa = (stato == "chiusa").then(|| format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1));
            let importo = (i % 5 != 0).then(|| (rng.random_range(0..10_000_000) as f64) / 100.0);
            let firma = (i % 3 == 0).then(|| {
                rng.fill_bytes(&mut sig);
                sig.clone()
            });
            st.execute(params![
                (i as i64) * 3 + 1,
                (i % citizens) as i64 + 1,
                KINDS[rng.random_range(0..KINDS.len())],
                stato,
                aperta,
                chiusa,
                importo,
                (i % 11 == 0) as i64,
                words(rng, 20 + i % 40),
                firma
            ])?;
        }
        let mut st = tx.prepare("INSERT INTO protocollo VALUES (?1, ?2, ?3, ?4)")?;
        for i in 0..scale.rows / 2 {
            st.execute(params![
                2020 + (i % 6) as i64,
                i as i64,
                words(rng, 8),
                format!("{} {}", FIRST[i % FIRST.len()], LAST[i % LAST.len()])
            ])?;
        }
        let mut st = tx.prepare("INSERT INTO log_eventi VALUES (?1, ?2, ?3)")?;
        for i in 0..scale.rows / 2 {
            st.execute(params![format!("2026-01-{:02}T10:00:{:02}Z", i % 28 + 1, i % 60), "operatore", words(rng, 5)])?;
        }
        // The same event twice: a table without a key may hold duplicate rows.
        st.execute(params!["2026-02-01T00:00:00Z", "sistema", "duplicato"])?;
        st.execute(params!["2026-02-01T00:00:00Z", "sistema", "duplicato"])?;
        let mut st = tx.prepare("INSERT INTO valori_limite VALUES (?1, ?2, ?3)")?;
        for (label, v, n) in [
            ("massimo", f64::MAX, i64::MAX),
            ("minimo", f64::MIN_POSITIVE, i64::MIN),
            ("negativo", -f64::MAX, -1),
            ("zero negativo", -0.0, 0),
            ("infinito", f64::INFINITY, 1),
            ("meno infinito", f64::NEG_INFINITY, -1),
            ("subnormale", 5e-324, 2),
            ("pi", std::f64::consts::PI, 3),
        ] {
            st.execute(params![label, v, n])?;
        }
        st.execute(params![Option::<String>::None, Option::<f64>::None, Option::<i64>::None])?;
    }
    {
        let mut st = tx.prepare("INSERT INTO ricerca_atti (titolo, testo) VALUES (?1, ?2)")?;
        for i in 0..(scale.rows / 10).max(5) {
            st.execute(params![format!("delibera {i}"), words(rng, 30)])?;
        }
    }
    tx.execute_batch("INSERT INTO cittadini_fts(cittadini_fts) VALUES('rebuild');")?;
    tx.commit()?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

fn seed_files(dir: &Path, scale: Scale, rng: &mut StdRng) -> std::io::Result<()> {
    let write = |path: &Path, data: &[u8]| -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().expect("file path has a parent"))?;
        std::fs::File::create(path)?.write_all(data)
    };
    // Edge cases first: empty, unicode, deep, spaces, a name that looks like a formula.
    write(&dir.join("attachments/vuoto.txt"), b"")?;
    write(&dir.join("attachments/certificato medico Mario Rossi.pdf"), b"%PDF-1.4\n% certificato\n")?;
    write(&dir.join("attachments/ñandú/日本語/Zoë — résumé.txt"), "città è già così\n".as_bytes())?;
    let deep = (0..12).map(|i| format!("livello-{i}")).collect::<Vec<_>>().join("/");
    write(&dir.join(format!("attachments/{deep}/profondo.txt")), b"in fondo\n")?;
    write(&dir.join("documents/=cmd|' calc'!A0.txt"), b"not a formula\n")?;

    let mut written = 0u64;
    let mut n = 0usize;
    let mut buf = Vec::new();
    while written < scale.file_bytes {
        n += 1;
        // Log-uniform sizes from 1 KiB up to 8 MiB (or 1/40 of the total for small tenants):
        // many small files, a few large ones.
        let max_exp = ((scale.file_bytes / 40).clamp(64 << 10, 8 << 20) as f64 / 1024.0).log2();
        let size = (1024f64 * 2f64.powf(rng.random_range(0.0..max_exp))) as usize;
        let size = size.min((scale.file_bytes - written) as usize + 1);
        buf.resize(size, 0);
        let random = rng.random_bool(scale.incompressible);
        let path = if random {
            rng.fill_bytes(&mut buf);
            dir.join(format!("attachments/{}/{:02}/scansione-{n:05}.pdf", 2020 + n % 6, n % 12 + 1))
        } else {
            let mut text = Vec::with_capacity(size);
            while text.len() < size {
                text.extend_from_slice(words(rng, 16).as_bytes());
                text.push(b'\n');
            }
            text.truncate(size);
            buf.copy_from_slice(&text);
            dir.join(format!("documents/delibere/{}/delibera-{n:05}.txt", 2020 + n % 6))
        };
        write(&path, &buf)?;
        written += size as u64;
    }
    Ok(())
}

/// How much one simulated day changes a sample tenant.
#[derive(Clone, Copy, Debug)]
pub struct Day {
    /// Fraction of the case rows changed: half updated (scattered across the table), half
    /// inserted; a twentieth as many are deleted.
    pub row_fraction: f64,
    /// New file bytes, as a fraction of the tenant's file bytes.
    pub file_fraction: f64,
}

/// What a simulated day did, to compare with what a backup saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayChanges {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub files_added: u64,
    pub files_changed: u64,
    pub files_removed: u64,
    /// Bytes of new and changed files.
    pub file_bytes: u64,
    /// Bytes of the inserted and updated case rows, in the canonical row encoding.
    pub row_bytes: u64,
    /// What changed, compressed (zstd level 1, as backups compress): those rows plus the new and
    /// changed files. The yardstick for what a day's generation should cost.
    pub compressed: u64,
}

/// One day of work on a sample tenant made by [`seed_tenant`]: new, changed and closed case
/// files, a few new citizens and register entries, new scans, a corrected document and a removed
/// file. Deterministic for a given seed and day.
pub fn simulate_day(root: &Path, tenant: &str, day: Day, seed: u64, n: u64) -> std::io::Result<DayChanges> {
    let dir = root.join(tenant);
    let mut rng = StdRng::seed_from_u64(seed ^ (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut c =
        change_rows(&dir.join(crate::source::DATABASE_FILE), day, &mut rng, n).map_err(std::io::Error::other)?;
    change_files(&dir, day, &mut rng, n, &mut c)?;
    Ok(c)
}

fn change_rows(path: &Path, day: Day, rng: &mut StdRng, n: u64) -> rusqlite::Result<DayChanges> {
    let mut db = rusqlite::Connection::open(path)?;
    let tx = db.transaction()?;
    let mut c = DayChanges::default();
    // The changed rows as a backup reads them, to measure what changed.
    let mut changed = Vec::new();
    let mut encode_row = |tx: &rusqlite::Transaction, id: i64| -> rusqlite::Result<u64> {
        let before = changed.len();
        tx.query_row("SELECT rowid, * FROM pratiche WHERE id = ?1", [id], |r| {
            for i in 0..r.as_ref().column_count() {
                crate::generation::rows::encode(r.get_ref(i)?, &mut changed);
            }
            Ok(())
        })?;
        Ok((changed.len() - before) as u64)
    };
    let ids: Vec<i64> =
        tx.prepare("SELECT id FROM pratiche")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let changes = ((ids.len() as f64 * day.row_fraction) as usize).max(2);
    let mut picked = std::collections::HashSet::new();
    let mut pick = |rng: &mut StdRng| loop {
        let id = ids[rng.random_range(0..ids.len())];
        if picked.insert(id) {
            return id;
        }
    };
    for _ in 0..changes / 2 {
        let id = pick(rng);
        let len = 20 + rng.random_range(0..40);
        let text = format!("{} (aggiornata il giorno {n})", words(rng, len));
        let importo = (rng.random_range(0..10_000_000) as f64) / 100.0;
        tx.execute("UPDATE pratiche SET descrizione = ?1, importo = ?2 WHERE id = ?3", params![text, importo, id])?;
        c.updated += 1;
        c.row_bytes += encode_row(&tx, id)?;
    }
    for _ in 0..(changes / 20).max(1) {
        tx.execute("DELETE FROM pratiche WHERE id = ?1", [pick(rng)])?;
        c.deleted += 1;
    }
    let citizens: i64 = tx.query_row("SELECT count(*) FROM cittadini", [], |r| r.get(0))?;
    let next: i64 = tx.query_row("SELECT max(id) FROM pratiche", [], |r| r.get(0))?;
    let mut sig = vec![0u8; 2048];
    for i in 0..changes - changes / 2 {
        let id = next + 1 + i as i64 * 3;
        let firma = (i % 3 == 0).then(|| {
            rng.fill_bytes(&mut sig);
            sig.clone()
        });
        let len = 20 + rng.random_range(0..40);
        tx.execute(
            "INSERT INTO pratiche (id, cittadino_id, tipo, stato, aperta_il, importo, descrizione, firma) \
             VALUES (?1, ?2, ?3, 'aperta', ?4, ?5, ?6, ?7)",
            params![
                id,
                rng.random_range(1..=citizens),
                KINDS[rng.random_range(0..KINDS.len())],
                format!("2026-11-{:02}T09:00:00", n % 28 + 1),
                (rng.random_range(0..10_000_000) as f64) / 100.0,
                words(rng, len),
                firma
            ],
        )?;
        c.inserted += 1;
        c.row_bytes += encode_row(&tx, id)?;
    }
    // A new citizen (AUTOINCREMENT moves sqlite_sequence), a register entry in a WITHOUT ROWID
    // table with one corrected and one withdrawn, and an event in a table without a key.
    tx.execute(
        "INSERT INTO cittadini (codice_fiscale, nome, cognome, creato_il) VALUES (?1, ?2, ?3, ?4)",
        params![
            format!("NUOVO{n:05}X{}", rng.random::<u32>()),
            "Nuova",
            "Cittadina",
            format!("2026-11-{:02}", n % 28 + 1)
        ],
    )?;
    tx.execute(
        "INSERT INTO protocollo VALUES (2026, ?1, ?2, 'Ufficio tributi')",
        params![1_000_000 + n as i64, words(rng, 8)],
    )?;
    let corrected = tx.execute(
        "UPDATE protocollo SET oggetto = ?1 WHERE anno = 2021 AND numero = (SELECT min(numero) FROM protocollo WHERE anno = 2021 AND oggetto NOT LIKE 'rettifica%')",
        params![format!("rettifica del giorno {n}: {}", words(rng, 6))],
    )?;
    let withdrawn = tx.execute(
        "DELETE FROM protocollo WHERE anno = 2022 AND numero = (SELECT max(numero) FROM protocollo WHERE anno = 2022)",
        [],
    )?;
    tx.execute(
        "INSERT INTO log_eventi VALUES (?1, 'operatore', ?2)",
        params![format!("2026-11-{:02}", n % 28 + 1), words(rng, 5)],
    )?;
    c.inserted += 3;
    c.updated += corrected as u64;
    c.deleted += withdrawn as u64;
    c.compressed += zstd::bulk::compress(&changed, 1).map(|z| z.len() as u64).unwrap_or(changed.len() as u64);
    tx.commit()?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(c)
}

fn change_files(dir: &Path, day: Day, rng: &mut StdRng, n: u64, c: &mut DayChanges) -> std::io::Result<()> {
    let mut files = Vec::new();
    let mut stack = vec![dir.join("attachments"), dir.join("documents")];
    let mut total = 0u64;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                total += e.metadata()?.len();
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut budget = (total as f64 * day.file_fraction) as u64;
    let mut i = 0;
    while budget > 0 {
        let size = (rng.random_range(16u64 << 10..2 << 20)).min(budget.max(1024));
        let mut buf = vec![0u8; size as usize];
        rng.fill_bytes(&mut buf);
        let path = dir.join(format!("attachments/2026/giorno-{n:03}/scansione-{i:04}.pdf"));
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, &buf)?;
        c.compressed += zstd::bulk::compress(&buf, 1).map(|z| z.len() as u64).unwrap_or(size).min(size);
        budget = budget.saturating_sub(size);
        c.files_added += 1;
        c.file_bytes += size;
        i += 1;
    }
    // A document corrected in place (appended to), and a file removed.
    if let Some(doc) =
        files.iter().find(|p| p.extension().is_some_and(|e| e == "txt") && p.metadata().is_ok_and(|m| m.len() > 0))
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(doc)?;
        let line = format!("rettifica del giorno {n}\n");
        f.write_all(line.as_bytes())?;
        c.files_changed += 1;
        let whole = std::fs::read(doc)?;
        c.file_bytes += whole.len() as u64;
        c.compressed += zstd::bulk::compress(&whole, 1).map(|z| z.len() as u64).unwrap_or(whole.len() as u64);
    }
    if let Some(victim) = files.iter().rev().find(|p| p.to_string_lossy().contains("scansione")) {
        std::fs::remove_file(victim)?;
        c.files_removed += 1;
    }
    Ok(())
}
