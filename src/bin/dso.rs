fn main() {
    std::process::exit(dso::cli::main(std::env::args_os().collect()));
}
