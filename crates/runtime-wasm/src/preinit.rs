//! Pre-initialisation of WASI command modules, in the manner of Wizer: a module that exports
//! `wizer.initialize` has that function run once, and its linear memory and mutable globals
//! afterwards are written back into the module as its initial state (data segments and global
//! initialisers). Every instance of the result starts where the initialisation left off, so an
//! expensive start-up (parsing a table, building an index) is paid once per published version
//! instead of once per invocation.
//!
//! To read state that a module does not export, the module is first instrumented with an export
//! for each memory and global it defines; the instrumented copy runs the initialisation, and the
//! original (without the `wizer.initialize` export and without a start function, which ran
//! already) is rewritten with the snapshot. Sections nimbus does not change are copied byte for
//! byte.
//!
//! Refused: imported or 64-bit or shared memories, and mutable globals of reference type (their
//! values cannot be written as constants). Tables are not snapshotted: an initialisation that
//! changes a table's contents loses that change, as with Wizer.

use std::borrow::Cow;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{ConstExpr, RawSection, SectionId};
use wasmparser::{Parser, Payload};

use crate::{Error, Result};

/// The export that marks a module's initialisation, as Wizer names it.
pub const INIT_EXPORT: &str = "wizer.initialize";
const MEMORY_EXPORT: &str = "nimbus.snapshot.memory.";
const GLOBAL_EXPORT: &str = "nimbus.snapshot.global.";

/// Zero bytes between two non-zero runs of memory that still go into one data segment.
const MERGE_GAP: usize = 64;
/// Data segments a snapshot writes at most; past this, runs are merged page by page.
const MAX_SEGMENTS: usize = 10_000;
/// The most initialised memory (non-zero runs) a snapshot may hold: it is written to the
/// node's disk and compiled into every sandbox of the version.
pub const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// What a snapshot must know of a module's own memories and globals.
struct Layout {
    /// Memories the module defines (none may be imported).
    memories: Vec<wasmparser::MemoryType>,
    /// Globals the module defines, after those it imports.
    globals: Vec<wasmparser::GlobalType>,
    imported_globals: u32,
    has_init: bool,
    has_data: bool,
}

/// The state a module's initialisation left behind.
pub(crate) struct Snapshot {
    /// Each defined memory's bytes.
    pub memories: Vec<Vec<u8>>,
    /// Each defined global's value as a constant; `None` for an immutable one (kept as is).
    pub globals: Vec<Option<ConstExpr>>,
}

fn refused(message: impl Into<String>) -> Error {
    Error::InvalidModule(message.into())
}

fn invalid(e: impl std::fmt::Display) -> Error {
    refused(format!("the wasm module failed validation: {e}"))
}

/// Whether a module exports `wizer.initialize`.
pub fn has_init_export(bytes: &[u8]) -> Result<bool> {
    Ok(layout(bytes)?.has_init)
}

fn layout(bytes: &[u8]) -> Result<Layout> {
    let mut out = Layout {
        memories: Vec::new(),
        globals: Vec::new(),
        imported_globals: 0,
        has_init: false,
        has_data: false,
    };
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    match import.map_err(invalid)?.ty {
                        wasmparser::TypeRef::Memory(_) => {
                            return Err(refused(
                                "a module that imports its memory cannot be pre-initialised",
                            ));
                        }
                        wasmparser::TypeRef::Global(_) => out.imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    if memory.memory64 || memory.shared || memory.page_size_log2.is_some() {
                        return Err(refused(
                            "64-bit and shared memories, and custom page sizes, cannot be \
                             pre-initialised",
                        ));
                    }
                    out.memories.push(memory);
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    let ty = global.map_err(invalid)?.ty;
                    if ty.mutable && !is_number(ty.content_type) {
                        return Err(refused(
                            "a mutable global of reference type cannot be pre-initialised",
                        ));
                    }
                    out.globals.push(ty);
                }
            }
            Payload::DataSection(_) => out.has_data = true,
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.name == INIT_EXPORT {
                        out.has_init = matches!(export.kind, wasmparser::ExternalKind::Func);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn is_number(ty: wasmparser::ValType) -> bool {
    use wasmparser::ValType::*;
    matches!(ty, I32 | I64 | F32 | F64 | V128)
}

/// The section a payload carries as raw bytes, for copying unchanged.
fn raw(bytes: &[u8], id: u8, range: std::ops::Range<usize>) -> RawSection<'_> {
    RawSection {
        id,
        data: &bytes[range],
    }
}

/// What to do with a module's sections.
enum Rewrite<'s> {
    /// Export every defined memory and global, change nothing else.
    Instrument,
    /// Write the snapshot in: memories' sizes, globals' initialisers, data segments; drop the
    /// init export and the start function.
    Apply(&'s Snapshot),
}

fn rewrite(bytes: &[u8], layout: &Layout, how: Rewrite<'_>) -> Result<Vec<u8>> {
    let mut module = wasm_encoder::Module::new();
    let mut reencoder = RoundtripReencoder;
    let reencode_err = |e: wasm_encoder::reencode::Error| invalid(e);
    // Original data segments (to keep their indices) plus the snapshot's, once written.
    let mut data_written = false;
    let mut data_count_written = false;
    let mut original_segments: Vec<(Cow<'_, [u8]>, bool)> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        // The data count, when the snapshot rewrites data, goes right before the code section
        // (or the data section, if there is no code).
        let before_code_or_data = matches!(
            payload,
            Payload::CodeSectionStart { .. } | Payload::DataSection(_)
        );
        if before_code_or_data
            && let Rewrite::Apply(snapshot) = &how
            && !data_count_written
        {
            let count = count_data_segments(bytes)? + snapshot_segments(snapshot).len() as u32;
            module.section(&wasm_encoder::DataCountSection { count });
            data_count_written = true;
        }
        match payload {
            Payload::Version { .. } | Payload::End(_) => {}
            Payload::CodeSectionEntry(_) => {}
            Payload::CodeSectionStart { range, .. } => {
                module.section(&raw(bytes, SectionId::Code as u8, range));
                // Without a data section of its own, the snapshot's goes right after the code,
                // ahead of any custom sections (`name` belongs after data).
                if let Rewrite::Apply(snapshot) = &how
                    && !layout.has_data
                {
                    module.section(&data_section(&[], snapshot));
                    data_written = true;
                }
            }
            Payload::CustomSection(c) => {
                module.section(&wasm_encoder::CustomSection {
                    name: Cow::Borrowed(c.name()),
                    data: Cow::Borrowed(c.data()),
                });
            }
            Payload::MemorySection(reader) => match &how {
                Rewrite::Instrument => {
                    module.section(&raw(bytes, SectionId::Memory as u8, reader.range()));
                }
                Rewrite::Apply(snapshot) => {
                    let mut section = wasm_encoder::MemorySection::new();
                    for (i, memory) in layout.memories.iter().enumerate() {
                        let mut ty = reencoder.memory_type(*memory).map_err(reencode_err)?;
                        let pages = snapshot.memories[i].len() as u64 / 65_536;
                        ty.minimum = ty.minimum.max(pages);
                        section.memory(ty);
                    }
                    module.section(&section);
                }
            },
            Payload::GlobalSection(reader) => match &how {
                Rewrite::Instrument => {
                    module.section(&raw(bytes, SectionId::Global as u8, reader.range()));
                }
                Rewrite::Apply(snapshot) => {
                    let mut section = wasm_encoder::GlobalSection::new();
                    for (i, global) in reader.into_iter().enumerate() {
                        let global = global.map_err(invalid)?;
                        let ty = reencoder.global_type(global.ty).map_err(reencode_err)?;
                        let init = match snapshot.globals.get(i).cloned().flatten() {
                            Some(value) => value,
                            None => reencoder
                                .const_expr(global.init_expr)
                                .map_err(reencode_err)?,
                        };
                        section.global(ty, &init);
                    }
                    module.section(&section);
                }
            },
            Payload::ExportSection(reader) => {
                let mut section = wasm_encoder::ExportSection::new();
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if matches!(how, Rewrite::Apply(_)) && export.name == INIT_EXPORT {
                        continue;
                    }
                    let kind = reencoder.export_kind(export.kind).map_err(reencode_err)?;
                    section.export(export.name, kind, export.index);
                }
                if let Rewrite::Instrument = how {
                    add_snapshot_exports(&mut section, layout);
                }
                module.section(&section);
            }
            Payload::StartSection { range, .. } => match how {
                Rewrite::Instrument => {
                    module.section(&raw(bytes, SectionId::Start as u8, range));
                }
                // It ran while the snapshot was taken.
                Rewrite::Apply(_) => {}
            },
            Payload::DataCountSection { range, .. } => {
                if let Rewrite::Instrument = how {
                    module.section(&raw(bytes, SectionId::DataCount as u8, range));
                }
            }
            Payload::DataSection(reader) => match &how {
                Rewrite::Instrument => {
                    module.section(&raw(bytes, SectionId::Data as u8, reader.range()));
                }
                Rewrite::Apply(snapshot) => {
                    for segment in reader {
                        let segment = segment.map_err(invalid)?;
                        let passive = matches!(segment.kind, wasmparser::DataKind::Passive);
                        original_segments.push((Cow::Borrowed(segment.data), passive));
                    }
                    module.section(&data_section(&original_segments, snapshot));
                    data_written = true;
                }
            },
            Payload::UnknownSection { id, range, .. } => {
                module.section(&raw(bytes, id, range));
            }
            other => {
                // Every other known section (types, imports, functions, tables, tags,
                // elements, ...) is copied as it is.
                if let Some((id, range)) = other.as_section() {
                    module.section(&raw(bytes, id, range));
                }
            }
        }
    }
    if let Rewrite::Apply(snapshot) = &how
        && !data_written
    {
        if !data_count_written {
            module.section(&wasm_encoder::DataCountSection {
                count: snapshot_segments(snapshot).len() as u32,
            });
        }
        module.section(&data_section(&[], snapshot));
    }
    Ok(module.finish())
}

fn add_snapshot_exports(section: &mut wasm_encoder::ExportSection, layout: &Layout) {
    for i in 0..layout.memories.len() {
        section.export(
            &format!("{MEMORY_EXPORT}{i}"),
            wasm_encoder::ExportKind::Memory,
            i as u32,
        );
    }
    for (i, global) in layout.globals.iter().enumerate() {
        if global.mutable {
            section.export(
                &format!("{GLOBAL_EXPORT}{i}"),
                wasm_encoder::ExportKind::Global,
                layout.imported_globals + i as u32,
            );
        }
    }
}

fn count_data_segments(bytes: &[u8]) -> Result<u32> {
    for payload in Parser::new(0).parse_all(bytes) {
        if let Payload::DataSection(reader) = payload.map_err(invalid)? {
            return Ok(reader.count());
        }
    }
    Ok(0)
}

/// The snapshot's data segments: (memory index, offset, bytes) for the non-zero runs of each
/// memory, runs closer than [`MERGE_GAP`] joined, at most [`MAX_SEGMENTS`] of them.
fn snapshot_segments(snapshot: &Snapshot) -> Vec<(u32, u32, &[u8])> {
    let mut out = Vec::new();
    for (index, memory) in snapshot.memories.iter().enumerate() {
        let mut gap = MERGE_GAP;
        loop {
            let runs = nonzero_runs(memory, gap);
            if runs.len() + out.len() <= MAX_SEGMENTS || gap >= memory.len() {
                out.extend(
                    runs.into_iter()
                        .map(|(start, end)| (index as u32, start as u32, &memory[start..end])),
                );
                break;
            }
            gap *= 16;
        }
    }
    out
}

/// The `[start, end)` ranges of non-zero bytes, joined across gaps of fewer than `gap` zeros.
fn nonzero_runs(memory: &[u8], gap: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < memory.len() {
        if memory[i] == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < memory.len() && memory[i] != 0 {
            i += 1;
        }
        match runs.last_mut() {
            Some(last) if start - last.1 < gap => last.1 = i,
            _ => runs.push((start, i)),
        }
    }
    runs
}

/// The data section of the result: the module's own segments, each made passive and empty (an
/// active segment is dropped once instantiated, so `memory.init` of it could only copy nothing;
/// a passive one keeps its bytes), then the snapshot's active segments.
fn data_section(
    original: &[(Cow<'_, [u8]>, bool)],
    snapshot: &Snapshot,
) -> wasm_encoder::DataSection {
    let mut section = wasm_encoder::DataSection::new();
    for (data, passive) in original {
        if *passive {
            section.passive(data.iter().copied());
        } else {
            section.passive(std::iter::empty::<u8>());
        }
    }
    for (memory, offset, bytes) in snapshot_segments(snapshot) {
        section.active(
            memory,
            &ConstExpr::i32_const(offset as i32),
            bytes.iter().copied(),
        );
    }
    section
}

/// Exports every memory and mutable global the module defines, for [`snapshot_of`].
pub(crate) fn instrument(bytes: &[u8]) -> Result<Vec<u8>> {
    let layout = layout(bytes)?;
    if !layout.has_init {
        return Err(refused(format!(
            "the wasm module does not export `{INIT_EXPORT}`, the function that initialises it"
        )));
    }
    rewrite(bytes, &layout, Rewrite::Instrument)
}

/// Reads the state of an instance of an [`instrument`]ed module.
pub(crate) fn snapshot_of<T>(
    bytes: &[u8],
    instance: &wasmtime::Instance,
    store: &mut wasmtime::Store<T>,
) -> Result<Snapshot> {
    let layout = layout(bytes)?;
    let mut memories = Vec::new();
    for i in 0..layout.memories.len() {
        let memory = instance
            .get_memory(&mut *store, &format!("{MEMORY_EXPORT}{i}"))
            .ok_or_else(|| refused("the instrumented module lost a memory export"))?;
        memories.push(memory.data(&*store).to_vec());
    }
    let mut globals = Vec::new();
    for (i, ty) in layout.globals.iter().enumerate() {
        if !ty.mutable {
            globals.push(None);
            continue;
        }
        let global = instance
            .get_global(&mut *store, &format!("{GLOBAL_EXPORT}{i}"))
            .ok_or_else(|| refused("the instrumented module lost a global export"))?;
        let value = match global.get(&mut *store) {
            wasmtime::Val::I32(v) => ConstExpr::i32_const(v),
            wasmtime::Val::I64(v) => ConstExpr::i64_const(v),
            wasmtime::Val::F32(bits) => ConstExpr::f32_const(f32::from_bits(bits).into()),
            wasmtime::Val::F64(bits) => ConstExpr::f64_const(f64::from_bits(bits).into()),
            wasmtime::Val::V128(v) => ConstExpr::v128_const(v.as_u128() as i128),
            _ => return Err(refused("a mutable global of reference type")),
        };
        globals.push(Some(value));
    }
    Ok(Snapshot { memories, globals })
}

/// The module with the snapshot written in.
pub(crate) fn apply(bytes: &[u8], snapshot: &Snapshot) -> Result<Vec<u8>> {
    let held: usize = snapshot_segments(snapshot)
        .iter()
        .map(|(_, _, data)| data.len())
        .sum();
    if held > MAX_SNAPSHOT_BYTES {
        return Err(refused(format!(
            "the initialised memory holds {held} bytes, more than a snapshot may ({MAX_SNAPSHOT_BYTES})"
        )));
    }
    let layout = layout(bytes)?;
    rewrite(bytes, &layout, Rewrite::Apply(snapshot))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
        GlobalType, Instruction as I, MemArg, MemorySection, MemoryType, Module, TypeSection,
        ValType,
    };

    use super::*;
    use crate::{RunInput, RunStatus, WasmConfig, WasmRuntime};

    /// One memory of a page (growing to `maximum`) and one mutable global.
    fn memory_and_global(m: &mut Module, maximum: Option<u64>, ty: ValType, init: ConstExpr) {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&memories);
        let mut globals = GlobalSection::new();
        globals.global(
            GlobalType {
                val_type: ty,
                mutable: true,
                shared: false,
            },
            &init,
        );
        m.section(&globals);
    }

    /// A WASI command whose `wizer.initialize` writes 42 at address 70,000 (the second page,
    /// which it grows into) and sets a mutable global to 7; `_start` traps unless it finds both.
    fn module(with_init: bool) -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0).function(0);
        m.section(&funcs);
        memory_and_global(&mut m, Some(4), ValType::I32, ConstExpr::i32_const(0));
        let mut exports = ExportSection::new();
        if with_init {
            exports.export(INIT_EXPORT, ExportKind::Func, 0);
        }
        exports.export("_start", ExportKind::Func, 1);
        m.section(&exports);
        let mem = MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        };
        let mut code = CodeSection::new();
        let mut init = Function::new([]);
        init.instruction(&I::I32Const(1))
            .instruction(&I::MemoryGrow(0))
            .instruction(&I::Drop)
            .instruction(&I::I32Const(70_000))
            .instruction(&I::I32Const(42))
            .instruction(&I::I32Store8(mem))
            .instruction(&I::I32Const(7))
            .instruction(&I::GlobalSet(0))
            .instruction(&I::End);
        code.function(&init);
        let mut start = Function::new([]);
        start
            .instruction(&I::I32Const(70_000))
            .instruction(&I::I32Load8U(mem))
            .instruction(&I::I32Const(42))
            .instruction(&I::I32Ne)
            .instruction(&I::GlobalGet(0))
            .instruction(&I::I32Const(7))
            .instruction(&I::I32Ne)
            .instruction(&I::I32Or)
            .instruction(&I::If(wasm_encoder::BlockType::Empty))
            .instruction(&I::Unreachable)
            .instruction(&I::End)
            .instruction(&I::End);
        code.function(&start);
        m.section(&code);
        m.finish()
    }

    /// A module with an imported global, a start function, an active and a passive data
    /// segment used by `memory.init`, and a name section after the code.
    fn busy_module() -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut imports = wasm_encoder::ImportSection::new();
        imports.import(
            "env",
            "base",
            GlobalType {
                val_type: ValType::I32,
                mutable: false,
                shared: false,
            },
        );
        m.section(&imports);
        let mut funcs = FunctionSection::new();
        funcs.function(0).function(0);
        m.section(&funcs);
        memory_and_global(&mut m, None, ValType::I64, ConstExpr::i64_const(1));
        let mut exports = ExportSection::new();
        exports.export(INIT_EXPORT, ExportKind::Func, 0);
        exports.export("_start", ExportKind::Func, 1);
        m.section(&exports);
        m.section(&wasm_encoder::StartSection { function_index: 1 });
        m.section(&wasm_encoder::DataCountSection { count: 2 });
        let mut code = CodeSection::new();
        let mut init = Function::new([]);
        init.instruction(&I::I32Const(0))
            .instruction(&I::I32Const(0))
            .instruction(&I::I32Const(2))
            .instruction(&I::MemoryInit {
                mem: 0,
                data_index: 1,
            })
            .instruction(&I::End);
        code.function(&init);
        let mut start = Function::new([]);
        start.instruction(&I::End);
        code.function(&start);
        m.section(&code);
        let mut data = wasm_encoder::DataSection::new();
        data.active(0, &ConstExpr::i32_const(8), b"abc".iter().copied());
        data.passive(b"xy".iter().copied());
        m.section(&data);
        m.section(&wasm_encoder::CustomSection {
            name: "name".into(),
            data: Cow::Borrowed(&[0u8, 0][..]),
        });
        m.finish()
    }

    #[test]
    fn a_busy_module_is_instrumented_and_rewritten_into_valid_wasm() {
        let bytes = busy_module();
        wasmparser::Validator::new().validate_all(&bytes).unwrap();
        let instrumented = instrument(&bytes).unwrap();
        wasmparser::Validator::new()
            .validate_all(&instrumented)
            .unwrap();
        // The defined global is the second one: after the import.
        let exported: Vec<(String, u32)> = Parser::new(0)
            .parse_all(&instrumented)
            .filter_map(|p| match p.unwrap() {
                Payload::ExportSection(r) => Some(
                    r.into_iter()
                        .map(|e| e.unwrap())
                        .map(|e| (e.name.to_owned(), e.index))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(
            exported.contains(&(format!("{GLOBAL_EXPORT}0"), 1)),
            "{exported:?}"
        );
        assert!(
            exported.contains(&(format!("{MEMORY_EXPORT}0"), 0)),
            "{exported:?}"
        );
        let mut memory = vec![0u8; 65_536];
        memory[8..11].copy_from_slice(b"abc");
        memory[0..2].copy_from_slice(b"xy");
        let snapshot = Snapshot {
            memories: vec![memory],
            globals: vec![Some(ConstExpr::i64_const(5))],
        };
        let out = apply(&bytes, &snapshot).unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
        let mut start = false;
        let mut segments = 0;
        let mut count = None;
        for payload in Parser::new(0).parse_all(&out) {
            match payload.unwrap() {
                Payload::StartSection { .. } => start = true,
                Payload::DataCountSection { count: c, .. } => count = Some(c),
                Payload::DataSection(r) => segments = r.count(),
                _ => {}
            }
        }
        assert!(!start, "the start function ran at snapshot time");
        // Two of the module's own (indices kept for memory.init) and one run "xy\0…abc".
        assert_eq!((count, segments), (Some(3), 3));
    }

    /// The names of the pre-initialised modules in a cache directory, sorted.
    fn snapshot_files(cache: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".preinit"))
            .collect();
        names.sort();
        names
    }

    fn input() -> RunInput {
        RunInput {
            stdin: bytes::Bytes::new(),
            env: Vec::new(),
            memory_limit_bytes: 64 << 20,
            timeout: Duration::from_secs(5),
            stdout_limit: 1 << 10,
            stderr_limit: 1 << 10,
        }
    }

    #[test]
    fn the_result_starts_from_the_snapshot_without_the_init_export() {
        let bytes = module(true);
        let layout = layout(&bytes).unwrap();
        assert!(layout.has_init);
        let mut memory = vec![0u8; 2 * 65_536];
        memory[70_000] = 42;
        let snapshot = Snapshot {
            memories: vec![memory],
            globals: vec![Some(ConstExpr::i32_const(7))],
        };
        let out = apply(&bytes, &snapshot).unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
        assert!(!has_init_export(&out).unwrap());
        assert_eq!(
            nonzero_runs(&[0, 1, 1, 0, 0, 2, 0], 2),
            vec![(1, 3), (5, 6)]
        );
        assert_eq!(nonzero_runs(&[0, 1, 1, 0, 0, 2, 0], 3), vec![(1, 6)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_preinitialised_module_runs_from_its_initialised_state() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = std::sync::Arc::new(
            WasmRuntime::new(&WasmConfig {
                max_instances: 4,
                cache_dir: dir.path().join("cache"),
                snapshot_disk_limit: 0,
            })
            .unwrap(),
        );
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, module(true)).unwrap();
        // Without pre-initialisation `_start` finds nothing and traps: the check can fail.
        let plain = runtime.prepare(&path).unwrap();
        let out = runtime.run(&plain, input()).await;
        assert!(
            matches!(out.status, RunStatus::Trapped(_)),
            "{:?}",
            out.status
        );

        let prepare = |path: std::path::PathBuf| {
            let runtime = runtime.clone();
            tokio::task::spawn_blocking(move || {
                runtime.prepare_preinitialized("fn:1", &path, &[], 64 << 20, Duration::from_secs(5))
            })
        };
        let template = prepare(path.clone()).await.unwrap().unwrap();
        for _ in 0..2 {
            let out = runtime.run(&template, input()).await;
            assert_eq!(out.status, RunStatus::Exited(0));
        }
        // The snapshot is cached with its checksum, and a damaged one is made again.
        let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".preinit"))
            .collect();
        assert_eq!(cached.len(), 1);
        std::fs::write(&cached[0], b"garbage").unwrap();
        let again = prepare(path.clone()).await.unwrap().unwrap();
        assert_eq!(
            runtime.run(&again, input()).await.status,
            RunStatus::Exited(0)
        );

        // Each version's snapshot is its own file, counted, and deleted with its version or its
        // function (found by name, so after a restart too), and no other.
        let prepare_as = |owner: &'static str| {
            let runtime = runtime.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                runtime.prepare_preinitialized(owner, &path, &[], 64 << 20, Duration::from_secs(5))
            })
        };
        prepare_as("fn:2").await.unwrap().unwrap();
        prepare_as("other:1").await.unwrap().unwrap();
        let snapshots = || snapshot_files(&dir.path().join("cache"));
        assert_eq!(snapshots().len(), 3);
        let one = std::fs::metadata(dir.path().join("cache").join(&snapshots()[0]))
            .unwrap()
            .len();
        assert!(runtime.preinitialized_disk_bytes() >= 2 * one);
        let before = runtime.preinitialized_disk_bytes();
        assert!(runtime.forget_preinitialized("fn:1") > 0);
        assert_eq!(snapshots().len(), 2);
        assert!(runtime.preinitialized_disk_bytes() < before);
        let restarted = WasmRuntime::new(&WasmConfig {
            max_instances: 4,
            cache_dir: dir.path().join("cache"),
            snapshot_disk_limit: 0,
        })
        .unwrap();
        assert_eq!(
            restarted.preinitialized_disk_bytes(),
            runtime.preinitialized_disk_bytes()
        );
        assert!(restarted.forget_preinitialized("fn") > 0);
        assert_eq!(snapshots().len(), 1, "{:?}", snapshots());
        assert_eq!(restarted.forget_preinitialized("fn"), 0);
        // The other function's snapshot is still there and still runs.
        let other = prepare_as("other:1").await.unwrap().unwrap();
        assert_eq!(
            runtime.run(&other, input()).await.status,
            RunStatus::Exited(0)
        );

        // A module without the export is refused with a message for the user.
        let without = dir.path().join("n.wasm");
        std::fs::write(&without, module(false)).unwrap();
        match prepare(without).await.unwrap() {
            Err(crate::Error::InvalidModule(m)) => assert!(m.contains(INIT_EXPORT), "{m}"),
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_stay_within_their_disk_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, module(true)).unwrap();
        let runtime = |cache: &str, limit: u64| {
            std::sync::Arc::new(
                WasmRuntime::new(&WasmConfig {
                    max_instances: 4,
                    cache_dir: dir.path().join(cache),
                    snapshot_disk_limit: limit,
                })
                .unwrap(),
            )
        };
        let prepare = |runtime: &std::sync::Arc<WasmRuntime>, owner: &'static str| {
            let runtime = runtime.clone();
            let path = path.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    runtime.prepare_preinitialized(
                        owner,
                        &path,
                        &[],
                        64 << 20,
                        Duration::from_secs(5),
                    )
                })
                .await
                .unwrap()
            }
        };
        let names = |cache: &str| snapshot_files(&dir.path().join(cache));
        let named = |owner: &str| {
            let (function, version) = owner.split_once(':').unwrap();
            crate::preinit_prefix(function, Some(version))
        };
        let has =
            |cache: &str, owner: &str| names(cache).iter().any(|n| n.starts_with(&named(owner)));
        // File times are only as fine as the kernel's clock tick: apart, so that the order of
        // use is the order of the files' times.
        let apart = || std::thread::sleep(Duration::from_millis(30));

        let probe = runtime("probe", 0);
        prepare(&probe, "probe:1").await.unwrap();
        let one = probe.preinitialized_disk_bytes();
        assert!(one > 0);

        // Room for two: the third deletes the least recently made, whose template still runs.
        let bounded = runtime("bounded", one * 5 / 2);
        let a = prepare(&bounded, "a:1").await.unwrap();
        apart();
        prepare(&bounded, "b:1").await.unwrap();
        apart();
        prepare(&bounded, "c:1").await.unwrap();
        assert!(!has("bounded", "a:1") && has("bounded", "b:1") && has("bounded", "c:1"));
        assert!(bounded.preinitialized_disk_bytes() <= one * 5 / 2);
        assert_eq!(bounded.run(&a, input()).await.status, RunStatus::Exited(0));

        // After a restart: reading b's from disk makes it the most recently used, so making
        // a's again deletes c's; a's runs from its initialised state again.
        apart();
        let restarted = runtime("bounded", one * 5 / 2);
        prepare(&restarted, "b:1").await.unwrap();
        apart();
        let again = prepare(&restarted, "a:1").await.unwrap();
        assert!(has("bounded", "a:1") && has("bounded", "b:1") && !has("bounded", "c:1"));
        assert_eq!(
            restarted.run(&again, input()).await.status,
            RunStatus::Exited(0)
        );

        // A snapshot larger than the limit alone is refused, and nothing is written or deleted.
        let small = runtime("small", one / 2);
        match prepare(&small, "d:1").await {
            Err(crate::Error::InvalidModule(m)) => {
                assert!(m.contains("MB this worker keeps for snapshots"), "{m}")
            }
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
        assert!(names("small").is_empty());
    }
}
