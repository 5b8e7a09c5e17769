/// Where `dso-runc` is built for musl, whose allocator returns freed memory to the kernel at
/// once: a bump arena instead, in front of the system allocator (`runtime::arena`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dso::runtime::arena::Arena<{ 1 << 20 }> = dso::runtime::arena::Arena::new();

fn main() {
    std::process::exit(dso::runtime::main(std::env::args_os().collect()));
}
