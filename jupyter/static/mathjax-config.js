// MathJax 3 settings for the Formgrader (grader/templates/formgrade/mathjax.html.j2)
window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\(", "\\)"]], processEscapes: true}, svg: {fontCache: "global"}};
