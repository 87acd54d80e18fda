;; Creates /out/big.parquet and writes 64 KiB blocks to it forever.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 100) "big.parquet")
  (func (export "_start")
    ;; O_CREAT (1) | O_TRUNC (8), rights fd_write (64)
    (if (call $open (i32.const 4) (i32.const 0) (i32.const 100) (i32.const 11)
              (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (call $exit (i32.const 3))))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $more
      (br_if $more (i32.eqz
        (call $write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))))
    ;; A write failed (disk full?): report it.
    (call $exit (i32.const 4))))
