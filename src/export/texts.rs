//! The texts that travel with an export, in Italian (`LEGGIMI.txt`) and English (`README.txt`).
//!
//! The outer texts are readable without the passphrase, so they hold nothing about the tenant's
//! data beyond its id and the time of the export: no table, file or count.

/// The outer `LEGGIMI.txt` and `README.txt`.
pub fn outer(tenant: &str, created: &str) -> [(&'static str, String); 2] {
    [
        (
            "LEGGIMI.txt",
            format!(
                "Esportazione dei dati di {tenant}, creata il {created} (UTC).\r\n\
\r\n\
I dati sono nel file contenuto.zip, cifrato con AES-256. Per aprirlo serve la passphrase\r\n\
consegnata insieme al collegamento per scaricare l'archivio (non e' scritta qui).\r\n\
\r\n\
Programmi che aprono l'archivio: 7-Zip (gratuito, https://www.7-zip.org), WinZip, WinRAR,\r\n\
Keka su macOS, 7z/7zz su Linux. Esplora risorse di Windows NON apre i file cifrati AES-256.\r\n\
\r\n\
1. Estrarre contenuto.zip da questo archivio, inserendo la passphrase quando richiesta.\r\n\
2. Estrarre tutto il contenuto di contenuto.zip (non e' cifrato) in una cartella.\r\n\
3. Leggere il file LEGGIMI.txt che si trova dentro: spiega cosa contiene e come verificarlo.\r\n\
\r\n\
Se l'esportazione e' divisa in parti (...-part1.zip, ...-part2.zip, ...), riunirle prima in\r\n\
un solo file, nell'ordine dei numeri:\r\n\
  Linux/macOS:  cat NOME-part1.zip NOME-part2.zip ... > NOME.zip\r\n\
  Windows:      copy /b NOME-part1.zip + NOME-part2.zip + ... NOME.zip\r\n\
oppure rinominarle NOME.zip.001, NOME.zip.002, ... e aprire NOME.zip.001 con 7-Zip.\r\n"
            ),
        ),
        (
            "README.txt",
            format!(
                "Data export of {tenant}, made on {created} (UTC).\r\n\
\r\n\
The data is in contenuto.zip, encrypted with AES-256. Opening it needs the passphrase that\r\n\
came with the download link (it is not written here).\r\n\
\r\n\
Tools that open this archive: 7-Zip (free, https://www.7-zip.org), WinZip, WinRAR, Keka on\r\n\
macOS, 7z/7zz on Linux. Windows Explorer CANNOT open AES-256 encrypted entries.\r\n\
\r\n\
1. Extract contenuto.zip from this archive, giving the passphrase when asked.\r\n\
2. Extract everything in contenuto.zip (it is not encrypted) into a folder.\r\n\
3. Read the LEGGIMI.txt / README.txt inside: they say what is there and how to verify it.\r\n\
\r\n\
If the export came in parts (...-part1.zip, ...-part2.zip, ...), join them first into one\r\n\
file, in the order of their numbers:\r\n\
  Linux/macOS:  cat NAME-part1.zip NAME-part2.zip ... > NAME.zip\r\n\
  Windows:      copy /b NAME-part1.zip + NAME-part2.zip + ... NAME.zip\r\n\
or rename them NAME.zip.001, NAME.zip.002, ... and open NAME.zip.001 with 7-Zip.\r\n"
            ),
        ),
    ]
}

/// The inner `LEGGIMI.txt` and `README.txt`: what is in the tree and how it was written.
pub fn inner(tenant: &str) -> [(&'static str, String); 2] {
    [
        (
            "LEGGIMI.txt",
            format!(
                "Copia completa dei dati di {tenant}.\r\n\
\r\n\
CONTENUTO\r\n\
  dati/{tenant}.xlsx       i dati, un foglio per tabella; il foglio \"Indice\" elenca ogni\r\n\
                           foglio con la sua tabella, le colonne e il numero di righe\r\n\
  dati/csv/TABELLA.csv     gli stessi dati in CSV (UTF-8, separatore virgola, RFC 4180),\r\n\
                           per l'uso con altri programmi\r\n\
  dati/blob/TABELLA/...    i valori binari (BLOB): la cella contiene il percorso del file\r\n\
  dati/celle-lunghe/...    i testi troppo lunghi per una cella di Excel (oltre 32.767\r\n\
                           caratteri): la cella ne contiene l'inizio e il percorso del file\r\n\
  allegati/                i file caricati dagli utenti\r\n\
  documenti/               i documenti prodotti dal servizio\r\n\
  manifest.json            l'elenco di tabelle (righe) e file (dimensione, SHA-256), con il\r\n\
                           nome originale dei file rinominati\r\n\
  SHA256SUMS               l'impronta SHA-256 di ogni file\r\n\
  (un'esportazione chiesta in un solo formato non ha il file .xlsx o la cartella csv)\r\n\
\r\n\
VERIFICA\r\n\
  Linux:    sha256sum -c SHA256SUMS\r\n\
  macOS:    shasum -a 256 -c SHA256SUMS\r\n\
  Windows:  Get-FileHash -Algorithm SHA256 FILE (PowerShell), da confrontare con SHA256SUMS\r\n\
\r\n\
IL FOGLIO DI CALCOLO\r\n\
  - Numeri come numeri; le date e gli orari ISO (2024-01-31, 2024-01-31T10:00:00, anche con\r\n\
    Z) come date di Excel. Le date non valide (2024-02-30) e quelle con un fuso orario diverso\r\n\
    da UTC restano testo, come le date prima del 1900-03-01.\r\n\
  - I numeri interi con piu' di 15 cifre sono scritti come testo: Excel ne perderebbe le\r\n\
    ultime cifre. NaN e infinito sono scritti come testo (NaN, inf, -inf).\r\n\
  - Il testo che inizia con = + - @ resta testo e non viene mai calcolato come formula.\r\n\
  - I caratteri di controllo che l'XML non ammette sono sostituiti da simboli visibili\r\n\
    (per esempio U+0001 diventa \u{2401}).\r\n\
  - Una tabella di oltre 1.048.575 righe continua nei fogli \"nome (2)\", \"nome (3)\", ...\r\n\
  - I nomi dei fogli sono accorciati a 31 caratteri e resi unici; l'Indice dice quale\r\n\
    tabella e' in ogni foglio.\r\n\
\r\n\
I FILE CSV\r\n\
  Contengono i valori esattamente come sono nel database: NULL e' un campo vuoto, il testo\r\n\
  vuoto e' \"\". Aprendo un CSV con un foglio di calcolo, il testo che inizia con = puo' essere\r\n\
  calcolato come formula: per leggere i dati usare il file .xlsx.\r\n\
\r\n\
NOMI DEI FILE\r\n\
  I percorsi sono quelli originali, resi sicuri per ogni sistema: i caratteri non ammessi da\r\n\
  Windows (< > : \" \\ | ? *) diventano _, i nomi uguali a meno di maiuscole ricevono ~2, ~3.\r\n\
  manifest.json riporta il nome originale di ogni file rinominato.\r\n"
            ),
        ),
        (
            "README.txt",
            format!(
                "Complete copy of the data of {tenant}.\r\n\
\r\n\
CONTENTS\r\n\
  dati/{tenant}.xlsx       the records, one sheet per table; the \"Indice\" sheet lists every\r\n\
                           sheet with its table, columns and row count\r\n\
  dati/csv/TABLE.csv       the same records as CSV (UTF-8, comma, RFC 4180) for machine reuse\r\n\
  dati/blob/TABLE/...      binary values (BLOBs): the cell holds the file's path\r\n\
  dati/celle-lunghe/...    texts too long for an Excel cell (over 32,767 characters): the\r\n\
                           cell holds their start and the file's path\r\n\
  allegati/                files the users attached\r\n\
  documenti/               documents the service generated\r\n\
  manifest.json            every table (rows) and file (size, SHA-256), with the original\r\n\
                           name of every renamed file\r\n\
  SHA256SUMS               the SHA-256 of every file\r\n\
  (an export made in one format only lacks the .xlsx file or the csv folder)\r\n\
\r\n\
VERIFY\r\n\
  Linux:    sha256sum -c SHA256SUMS\r\n\
  macOS:    shasum -a 256 -c SHA256SUMS\r\n\
  Windows:  Get-FileHash -Algorithm SHA256 FILE (PowerShell), compared with SHA256SUMS\r\n\
\r\n\
THE WORKBOOK\r\n\
  - Numbers are numbers; ISO dates and timestamps (2024-01-31, 2024-01-31T10:00:00, also with\r\n\
    Z) are Excel dates. Invalid dates (2024-02-30), timestamps with a non-UTC offset and dates\r\n\
    before 1900-03-01 stay text.\r\n\
  - Integers of more than 15 digits are text, since Excel would lose their last digits. NaN\r\n\
    and infinities are text (NaN, inf, -inf).\r\n\
  - Text starting with = + - @ stays text and is never evaluated as a formula.\r\n\
  - Control characters that XML cannot hold are replaced by visible symbols (U+0001 becomes\r\n\
    \u{2401}).\r\n\
  - A table of more than 1,048,575 rows continues on sheets \"name (2)\", \"name (3)\", ...\r\n\
  - Sheet names are cut to 31 characters and made unique; the Indice says which table each\r\n\
    sheet holds.\r\n\
\r\n\
THE CSV FILES\r\n\
  They hold the values exactly as the database does: NULL is an empty field, empty text is\r\n\
  \"\". A spreadsheet program may evaluate CSV text starting with = as a formula: read the\r\n\
  records in the .xlsx file.\r\n\
\r\n\
FILE NAMES\r\n\
  Paths are the original ones made safe on every system: characters Windows refuses\r\n\
  (< > : \" \\ | ? *) become _, names equal but for case get ~2, ~3. manifest.json gives the\r\n\
  original name of every renamed file.\r\n"
            ),
        ),
    ]
}
