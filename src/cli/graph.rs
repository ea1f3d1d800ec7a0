//! `wepoq graph`: the topology as Graphviz DOT, or as SVG rendered in-process (no browser,
//! no Graphviz install needed).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use wepoq_compiler::graph;

use super::SpecArgs;
use super::load::load;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Dot,
    Svg,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Output format
    #[arg(long, value_enum, default_value = "dot")]
    pub format: Format,
}

pub fn run(args: &GraphArgs) -> ExitCode {
    let Ok(loaded) = load(&args.spec) else {
        return ExitCode::FAILURE;
    };
    for ns in &loaded.compiled.namespaces {
        let dot = graph::to_dot(&graph::build(&ns.namespace));
        match args.format {
            Format::Dot => print!("{dot}"),
            Format::Svg => match dot_to_svg(&dot) {
                Ok(svg) => print!("{svg}"),
                Err(e) => {
                    eprintln!("error: cannot render SVG: {e}");
                    return ExitCode::FAILURE;
                }
            },
        }
    }
    ExitCode::SUCCESS
}

pub fn dot_to_svg(dot: &str) -> Result<String, String> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};
    let ast = DotParser::new(dot).process()?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&ast);
    let mut visual = builder.get();
    let mut svg = SVGWriter::new();
    visual.do_it(false, false, false, &mut svg);
    Ok(svg.finalize())
}
