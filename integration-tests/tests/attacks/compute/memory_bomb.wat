;; Grows its memory 16 MiB at a time until the host refuses.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 256)) (i32.const -1))))))
