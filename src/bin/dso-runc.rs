fn main() {
    std::process::exit(dso::runtime::main(std::env::args_os().collect()));
}
